//! Running the server: readiness, Prometheus metrics, request logs, CORS.
//! All against the real server on a real port.

mod common;

use common::{http, meter_sample, until, Backend, TestServer};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

on_both_backends!(
    metrics_count_a_charger_session,
    ready_answers_while_the_server_serves_and_refuses_while_it_stops,
    event_streams_follow_sessions_and_chargers,
);

/// A Server-Sent Events stream read as it arrives.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(server: &TestServer, path: &str, token: &str) -> EventStream {
        let response = http()
            .get(server.http_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (name, data), skipping keep-alive comments.
    async fn next(&mut self) -> (String, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(name) = name {
                    return (name, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event called `name`, skipping others.
    async fn next_named(&mut self, name: &str) -> serde_json::Value {
        loop {
            let (n, data) = self.next().await;
            if n == name {
                return data;
            }
        }
    }
}

/// The samples of a Prometheus/OpenMetrics exposition: series (name and
/// labels, as written) to value. Fails on a line that is not a sample.
fn scrape_lines(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let response = http()
        .get(server.http_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    scrape_lines(&text)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", sorted(samples)))
}

fn sorted(samples: &HashMap<String, f64>) -> Vec<(&String, &f64)> {
    let mut all: Vec<_> = samples.iter().collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    all
}

async fn metrics_count_a_charger_session(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (status, body) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-METRICS",
            Some(&admin),
            Some(json!({"name": "Metrics hub", "pricePerKWh": 165, "currency": "NGN"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.user_with_tag("driver-m", "TAG-M").await;

    // A plain GET on the OCPP endpoint is refused: not a WebSocket.
    let refused = http()
        .get(server.http_url("/ocpp/CP-METRICS"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 426);

    let mut charger = server.booted_charger("CP-METRICS").await;
    let started = charger
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "TAG-M", "meterStart": 1000, "timestamp": "2024-01-15T10:00:00Z"}),
        )
        .await;
    let tx = started["transactionId"].as_i64().unwrap();
    for (at, wh) in [
        ("2024-01-15T10:10:00Z", 1500.0),
        ("2024-01-15T10:20:00Z", 2000.0),
    ] {
        charger
            .call(
                "MeterValues",
                json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample(at, wh, None)]}),
            )
            .await;
    }
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 3500, "timestamp": "2024-01-15T10:30:00Z", "reason": "Local"}),
        )
        .await;
    // An action OCPP 1.6 does not have, and a known one with a bad payload.
    assert_eq!(
        charger.error_code_for(r#"[2,"x1","Teleport",{}]"#).await,
        "NotImplemented"
    );
    assert_eq!(
        charger
            .error_code_for(r#"[2,"x2","Heartbeat",{"unexpected":1}]"#)
            .await,
        "FormationViolation"
    );

    let m = scrape(&server).await;
    let messages = |action: &str, outcome: &str| {
        value(
            &m,
            &format!(r#"csms_ocpp_messages_total{{action="{action}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(messages("BootNotification", "answered"), 1.0);
    assert_eq!(messages("StartTransaction", "answered"), 1.0);
    assert_eq!(messages("MeterValues", "answered"), 2.0);
    assert_eq!(messages("StopTransaction", "answered"), 1.0);
    assert_eq!(messages("(unknown)", "NotImplemented"), 1.0);
    assert_eq!(messages("Heartbeat", "FormationViolation"), 1.0);
    assert_eq!(
        value(
            &m,
            r#"csms_ocpp_answer_seconds_count{action="MeterValues"}"#
        ),
        2.0
    );
    assert!(value(&m, r#"csms_ocpp_answer_seconds_sum{action="MeterValues"}"#) > 0.0);
    assert_eq!(value(&m, "csms_chargers_connected"), 1.0);
    assert_eq!(
        value(
            &m,
            r#"csms_handshake_refusals_total{reason="not_websocket"}"#
        ),
        1.0
    );
    // Boot, start, two readings, stop and the refused frames' log rows all
    // went through the writer, in at least one committed batch.
    assert!(value(&m, r#"csms_write_batches_total{outcome="committed"}"#) >= 1.0);
    assert!(value(&m, "csms_write_batch_size_count") >= 1.0);
    assert!(value(&m, "csms_write_commit_seconds_count") >= 1.0);
    // The log rides the writer without anyone waiting for it: it drains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value(&scrape(&server).await, "csms_message_log_lag") > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message log does not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From the database: one completed session of 2.5 kWh.
    assert_eq!(value(&m, r#"csms_sessions{status="completed"}"#), 1.0);
    assert_eq!(value(&m, "csms_energy_delivered_wh"), 2500.0);
    assert_eq!(value(&m, "csms_database_errors_total"), 0.0);

    // The connection's end shows at the next scrape.
    charger.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&server).await;
        if value(&m, "csms_chargers_connected") == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the charger still counts as connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

async fn ready_answers_while_the_server_serves_and_refuses_while_it_stops(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ready = http().get(server.http_url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    // Chargers that reconnect the moment they are closed keep the server in
    // its stopping phase for a moment; /ready must say 503 then.
    let stop_trying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut chargers = Vec::new();
    for n in 0..5 {
        let url = server.ws_url(&format!("CP-READY-{n}"));
        let stop_trying = stop_trying.clone();
        chargers.push(tokio::spawn(async move {
            while !stop_trying.load(std::sync::atomic::Ordering::Relaxed) {
                match common::try_connect(&url, common::ConnectOptions::default()).await {
                    Ok((socket, _)) => {
                        let mut charger = common::TestCharger::from_socket(socket);
                        while charger
                            .try_next_frame(Duration::from_secs(30))
                            .await
                            .is_some()
                        {}
                    }
                    Err(tokio_tungstenite::tungstenite::Error::Http(_)) => {}
                    Err(_) => break,
                }
            }
        }));
    }
    let registry = &server.state.registry;
    until(
        "five chargers connected",
        Duration::from_secs(20),
        || async move { registry.count() >= 5 },
    )
    .await;
    let url = server.http_url("/ready");
    let watcher = tokio::spawn(async move {
        // Fresh connections each time, as a load balancer's probe makes.
        let mut seen = Vec::new();
        loop {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            match client.get(&url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.unwrap();
                    seen.push((status, body));
                }
                Err(_) => break,
            }
        }
        seen
    });
    let mut shutdown = server.state.shutdown.clone();
    let stopping = tokio::spawn(server.stop());
    // Wait until the server is stopping before looking at the answers.
    shutdown.wait_for(|stopping| *stopping).await.unwrap();
    let _ = stopping.await.unwrap();
    stop_trying.store(true, std::sync::atomic::Ordering::Relaxed);
    for charger in chargers {
        charger.await.unwrap();
    }
    let seen = watcher.await.unwrap();
    let refused: Vec<_> = seen.iter().filter(|(s, _)| *s == 503).collect();
    assert!(!refused.is_empty(), "no 503 while stopping: {seen:?}");
    assert!(refused
        .iter()
        .all(|(_, body)| body["reason"] == "the server is shutting down"));
    // Once it said 503 it never said 200 again.
    let first_refusal = seen.iter().position(|(s, _)| *s == 503).unwrap();
    assert!(
        seen[first_refusal..].iter().all(|(s, _)| *s == 503),
        "{seen:?}"
    );
}

async fn event_streams_follow_sessions_and_chargers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let driver = server.token("driver-e", "driver");
    let other_driver = server.token("driver-x", "driver");
    let admin = server.token("ops", "admin");
    // Streams need their tokens: none, or a driver's on the admin stream, is refused.
    let anonymous = http()
        .get(server.http_url("/api/charging/sessions/active/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let not_admin = http()
        .get(server.http_url("/api/admin/events"))
        .bearer_auth(&driver)
        .send()
        .await
        .unwrap();
    assert_eq!(not_admin.status(), 403);

    let mut mine =
        EventStream::open(&server, "/api/charging/sessions/active/events", &driver).await;
    let mut theirs = EventStream::open(
        &server,
        "/api/charging/sessions/active/events",
        &other_driver,
    )
    .await;
    let mut ops = EventStream::open(&server, "/api/admin/events", &admin).await;
    // First, the session as it stands: none yet.
    assert_eq!(
        mine.next().await,
        ("session.current".into(), serde_json::Value::Null)
    );
    assert_eq!(theirs.next().await.0, "session.current");

    // An app session at a station that is not a charger: started, updated, completed.
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&driver),
            Some(json!({"stationId": "HUB-EVENTS", "connectorId": "connector-1", "batteryLevelStart": 45})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (name, started) = mine.next().await;
    assert_eq!(name, "session.started");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["status"], "active");
    let (status, body) = server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(&driver),
            Some(json!({"batteryLevel": 52, "energyDelivered": 4.2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (name, updated) = mine.next().await;
    assert_eq!(name, "session.updated");
    assert_eq!(
        (
            updated["id"].as_str(),
            updated["energyDelivered"].clone(),
            updated["totalCost"].clone(),
            updated["batteryLevel"].clone()
        ),
        (Some(id.as_str()), json!(4.2), json!(693), json!(52))
    );
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            Some(&driver),
            Some(json!({"sessionId": id, "batteryLevelEnd": 80})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (name, completed) = mine.next().await;
    assert_eq!(name, "session.completed");
    assert_eq!(completed["status"], "completed");

    // The operator saw the same session go by.
    assert_eq!(ops.next_named("session.started").await["id"], id.as_str());
    assert_eq!(ops.next_named("session.completed").await["id"], id.as_str());

    // A charger: connected, a connector's status, an anomaly, disconnected.
    let mut charger = server.booted_charger("CP-EVENTS").await;
    assert_eq!(
        ops.next_named("charger.connected").await["chargerId"],
        "CP-EVENTS"
    );
    charger
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
        )
        .await;
    let status = ops.next_named("connector.status").await;
    assert_eq!(
        (
            status["chargerId"].as_str(),
            status["connectorId"].as_i64(),
            status["status"].as_str()
        ),
        (Some("CP-EVENTS"), Some(1), Some("Preparing"))
    );

    // A charger's session: started through the API, then driven by the
    // charger's StartTransaction, MeterValues and StopTransaction.
    let started = server.post_in_background(
        &driver,
        "/api/charging/sessions/start",
        json!({"stationId": "CP-EVENTS", "connectorId": "connector-1", "batteryLevelStart": 20}),
    );
    let (call_id, action, payload) = charger.expect_call().await;
    assert_eq!(action, "RemoteStartTransaction");
    charger.reply(&call_id, json!({"status": "Accepted"})).await;
    let (name, ocpp_session) = mine.next().await;
    assert_eq!(name, "session.started");
    let ocpp_id = ocpp_session["id"].as_str().unwrap().to_owned();
    let tx = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": payload["idTag"], "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}))
        .await["transactionId"]
        .as_i64()
        .unwrap();
    assert_eq!(started.await.unwrap().0, 201);
    let (name, bound) = mine.next().await;
    assert_eq!(
        (name.as_str(), bound["id"].as_str()),
        ("session.updated", Some(ocpp_id.as_str()))
    );
    charger
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": tx, "meterValue": [meter_sample("2024-01-15T10:10:00Z", 1500.0, Some(40.0))]}),
        )
        .await;
    let (name, metered) = mine.next().await;
    assert_eq!(name, "session.updated");
    assert_eq!(
        (
            metered["energyDelivered"].clone(),
            metered["batteryLevel"].clone()
        ),
        (json!(1.5), json!(40))
    );
    charger
        .call(
            "StopTransaction",
            json!({"transactionId": tx, "meterStop": 2000, "timestamp": "2024-01-15T10:20:00Z", "reason": "EVDisconnected"}),
        )
        .await;
    let (name, done) = mine.next().await;
    assert_eq!(name, "session.completed");
    assert_eq!(
        (done["id"].as_str(), done["energyDelivered"].clone()),
        (Some(ocpp_id.as_str()), json!(2))
    );

    charger
        .call(
            "StopTransaction",
            json!({"transactionId": 999999, "meterStop": 10, "timestamp": "2024-01-15T10:00:00Z"}),
        )
        .await;
    let anomaly = ops.next_named("anomaly").await;
    assert_eq!(anomaly["kind"], "stop_unknown_transaction", "{anomaly}");
    charger.close().await;
    let gone = ops.next_named("charger.disconnected").await;
    assert_eq!(gone["chargerId"], "CP-EVENTS");

    // The other driver saw none of it: their next event is their own.
    let (status, _) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&other_driver),
            Some(json!({"stationId": "HUB-EVENTS", "connectorId": "connector-2", "batteryLevelStart": 30})),
        )
        .await;
    assert_eq!(status, 201);
    let (name, theirs_started) = theirs.next().await;
    assert_eq!(name, "session.started");
    assert_ne!(theirs_started["id"], id.as_str());

    // Streams end when the server stops, so shutdown does not wait on them.
    let began = tokio::time::Instant::now();
    server.stop().await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

/// Guessing a password: after 5 failures the account is answered 429 with
/// `Retry-After`, even with the right password, and nothing else is.
#[tokio::test]
async fn repeated_failed_logins_for_an_account_are_slowed() {
    let server = TestServer::start(Backend::Sqlite).await;
    for email in ["guessed@example.com", "other@example.com"] {
        let (status, body) = server
            .api(
                "POST",
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "right-password", "name": "Driver"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let login = |email: &'static str, password: &'static str| {
        http()
            .post(server.http_url("/api/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    for _ in 0..5 {
        let response = login("guessed@example.com", "wrong-guess").await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let response = login("guessed@example.com", "right-password")
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_ATTEMPTS");
    // Another account from the same address logs in.
    let response = login("other@example.com", "right-password").await.unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.cors_origins = csms::config::parse_origins("https://app.example.com").unwrap();
    })
    .await;
    let preflight = |origin: &'static str| {
        http()
            .request(
                reqwest::Method::OPTIONS,
                server.http_url("/api/charging/sessions"),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A simple request from the allowed origin carries the header too.
    let get = http()
        .get(server.http_url("/health"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    server.stop().await;
}

#[tokio::test]
async fn without_configured_origins_there_are_no_cors_headers() {
    let server = TestServer::start(Backend::Sqlite).await;
    let response = http()
        .get(server.http_url("/health"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    server.stop().await;
}

async fn next_object(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("a log line in time")
        .unwrap()
        .expect("the server is still running");
    serde_json::from_str::<serde_json::Value>(&line)
        .unwrap_or_else(|e| panic!("not a JSON object per line ({e}): {line}"))
}

/// `CSMS_LOG_FORMAT=json`: the real binary writes one JSON object per line,
/// and each HTTP request has its method, route, status and latency.
#[tokio::test]
async fn json_logs_are_one_object_per_line_with_a_span_per_request() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_csms"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("CSMS_DATABASE_URL")
        .env("CSMS_LOG_FORMAT", "json")
        .env("CSMS_LOG", "info")
        .env("CSMS_JWT_SECRET", "test-secret-test-secret-test-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("csms binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let object = next_object(&mut lines).await;
        if object["message"] == "csms listening" {
            let addr = object["local_addr"].as_str().expect("local_addr field");
            break addr.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
        }
    };
    let response = http()
        .get(format!(
            "http://127.0.0.1:{port}/api/charging/sessions/nope"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let finished = loop {
        let object = next_object(&mut lines).await;
        if object["message"] == "request finished" {
            break object;
        }
    };
    assert_eq!(finished["level"], "INFO", "{finished}");
    assert_eq!(finished["status"], 401, "{finished}");
    assert!(finished["latency_ms"].as_f64().is_some(), "{finished}");
    let span = &finished["span"];
    assert_eq!(span["name"], "http", "{finished}");
    assert_eq!(span["method"], "GET", "{finished}");
    assert_eq!(span["route"], "/api/charging/sessions/{id}", "{finished}");
    child.kill().await.unwrap();
}
