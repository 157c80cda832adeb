//! What the operator console reads, end to end on SQLite and PostgreSQL:
//! every session with filters and search, one transaction with its chart
//! points, anomalies and frames, a user with tags, wallets and ledger,
//! payment links and balance checks, server-side search on the admin lists,
//! the charger events the console's live updates need, and `csms user`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

on_both_backends!(
    sessions_are_listed_newest_first_with_filters_and_search,
    a_transaction_shows_its_chart_points_anomalies_and_frames,
    a_user_shows_tags_wallets_ledger_links_and_checks,
    admin_lists_search_and_page_in_the_database,
    the_console_endpoints_are_for_operators_only,
    the_operator_stream_tells_boots_and_heartbeats,
    csms_user_makes_an_operator_who_can_log_in,
);

fn ts(minute: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2024-01-15T10:00:00Z").unwrap()
        + chrono::Duration::minutes(minute))
    .to_rfc3339()
}

/// A charger transaction for `tag`'s driver on `charger`, with readings at
/// minutes 1 and 2 (the second with a register going backwards), stopped
/// at minute 3. Returns the transaction id.
async fn charger_transaction(server: &TestServer, charger: &str, tag: &str) -> i64 {
    let mut c = server.booted_charger(charger).await;
    let started = c
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": tag, "meterStart": 1000, "timestamp": ts(0)}),
        )
        .await;
    let tx = started["transactionId"].as_i64().unwrap();
    let reading = |minute: i64, wh: &str, w: &str, soc: &str| {
        json!({"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": ts(minute), "sampledValue": [
            {"value": wh, "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": w, "measurand": "Power.Active.Import", "unit": "W"},
            {"value": soc, "measurand": "SoC", "unit": "Percent"}]}]})
    };
    c.call("MeterValues", reading(1, "2500", "7000", "40"))
        .await;
    c.call("MeterValues", reading(2, "2000", "6500", "45"))
        .await;
    c.call(
        "StopTransaction",
        json!({"transactionId": tx, "meterStop": 4000, "timestamp": ts(3), "reason": "Local"}),
    )
    .await;
    c.close().await;
    tx
}

async fn get(server: &TestServer, token: &str, path: &str) -> Value {
    let (status, body) = server.api("GET", path, Some(token), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match &v[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

async fn sessions_are_listed_newest_first_with_filters_and_search(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-a", "TAG-A").await;
    let tx = charger_transaction(&server, "CP-HIST", "TAG-A").await;
    // An app session at the demo station, still active.
    let (_, driver) = server.register("app@example.com").await;
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&driver),
            Some(json!({"stationId": "evliter-lagos-victoria-island", "connectorId": "connector-1", "batteryLevelStart": 45})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let app_session = body["data"]["id"].as_str().unwrap().to_owned();

    let all = get(&server, &admin, "/api/admin/sessions/history").await;
    assert_eq!(all["pagination"]["total"], 2);
    // Newest first: the app session started now, the charger's in 2024.
    assert_eq!(all["data"][0]["id"], app_session);
    assert_eq!(all["data"][1]["transactionId"], tx);
    assert_eq!(all["data"][1]["energyDelivered"], 3);

    let active = get(&server, &admin, "/api/admin/sessions/history?status=active").await;
    assert_eq!(ids(&active, "id"), vec![app_session.clone()]);
    let by_charger = get(
        &server,
        &admin,
        "/api/admin/sessions/history?chargerId=CP-HIST",
    )
    .await;
    assert_eq!(by_charger["pagination"]["total"], 1);
    assert_eq!(by_charger["data"][0]["status"], "completed");
    // Search: station name, any case; the idTag; a wildcard taken literally.
    let by_name = get(&server, &admin, "/api/admin/sessions/history?q=VICTORIA").await;
    assert_eq!(ids(&by_name, "id"), vec![app_session.clone()]);
    let by_tag = get(&server, &admin, "/api/admin/sessions/history?q=tag-a").await;
    assert_eq!(by_tag["pagination"]["total"], 1);
    assert_eq!(by_tag["data"][0]["chargerId"], "CP-HIST");
    let wildcard = get(&server, &admin, "/api/admin/sessions/history?q=%25").await;
    assert_eq!(wildcard["pagination"]["total"], 0);
    // Time bounds on the start.
    let in_2024 = get(
        &server,
        &admin,
        "/api/admin/sessions/history?from=2024-01-01T00:00:00Z&to=2025-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(in_2024["pagination"]["total"], 1);
    assert_eq!(in_2024["data"][0]["chargerId"], "CP-HIST");
    // Paging.
    let second = get(
        &server,
        &admin,
        "/api/admin/sessions/history?limit=1&offset=1",
    )
    .await;
    assert_eq!(
        second["pagination"],
        json!({"total": 2, "limit": 1, "offset": 1})
    );
    assert_eq!(second["data"][0]["transactionId"], tx);
    // Bad filters are a 400 naming the field.
    for (query, field) in [
        ("status=paused", "status"),
        ("from=yesterday", "from"),
        ("to=2024-13-01", "to"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = server
            .api(
                "GET",
                &format!("/api/admin/sessions/history?{query}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["details"]["field"], field, "{query}");
    }
    server.stop().await;
}

async fn a_transaction_shows_its_chart_points_anomalies_and_frames(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    server.user_with_tag("driver-t", "TAG-T").await;
    let tx = charger_transaction(&server, "CP-TX", "TAG-T").await;

    let body = get(&server, &admin, &format!("/api/admin/transactions/{tx}")).await;
    let view = &body["data"];
    assert_eq!(view["transaction"]["id"], tx);
    assert_eq!(view["transaction"]["chargerId"], "CP-TX");
    assert_eq!(view["transaction"]["meterStop"], 4000);
    assert_eq!(view["session"]["transactionId"], tx);
    assert_eq!(view["session"]["userId"], "driver-t");
    let series = view["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(series[0]["energyWh"], 1500.0);
    assert_eq!(series[0]["powerW"], 7000.0);
    assert_eq!(series[0]["soc"], 40.0);
    assert_eq!(series[1]["energyWh"], 1000.0);
    assert!(
        series[0]["at"].as_str().unwrap() < series[1]["at"].as_str().unwrap(),
        "by time"
    );
    let kinds: Vec<&str> = view["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"register_went_backwards"), "{kinds:?}");
    assert!(view["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["transactionId"] == tx));

    // The frames of its time: the start, the readings, the stop, both ways.
    let frames = get(
        &server,
        &admin,
        &format!("/api/admin/transactions/{tx}/messages"),
    )
    .await;
    let actions: Vec<&str> = frames["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["action"].as_str())
        .collect();
    for action in ["StartTransaction", "MeterValues", "StopTransaction"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(frames["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["direction"] == "out"));
    let limited = get(
        &server,
        &admin,
        &format!("/api/admin/transactions/{tx}/messages?limit=2"),
    )
    .await;
    assert_eq!(limited["data"].as_array().unwrap().len(), 2);

    // The anomaly list filters by transaction and pages.
    let anomalies = get(
        &server,
        &admin,
        &format!("/api/admin/anomalies?transactionId={tx}&limit=1"),
    )
    .await;
    assert_eq!(anomalies["data"].as_array().unwrap().len(), 1);
    assert!(anomalies["pagination"]["total"].as_i64().unwrap() >= 1);
    let none = get(&server, &admin, "/api/admin/anomalies?transactionId=999999").await;
    assert_eq!(none["pagination"]["total"], 0);
    let (status, body) = server
        .api(
            "GET",
            "/api/admin/anomalies?transactionId=x",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["details"]["field"]),
        (400, &json!("transactionId"))
    );

    let (status, _) = server
        .api("GET", "/api/admin/transactions/999999", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = server
        .api("GET", "/api/admin/transactions/abc", Some(&admin), None)
        .await;
    assert_eq!((status, &body["details"]["field"]), (400, &json!("id")));
    server.stop().await;
}

async fn a_user_shows_tags_wallets_ledger_links_and_checks(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let (user, token) = server.register("payer@example.com").await;
    server
        .id_tag("PAYER-1", Some(&user), "Accepted", None)
        .await;
    let (status, body) = server
        .api(
            "POST",
            &format!("/api/admin/users/{user}/wallet/credit"),
            Some(&admin),
            Some(json!({"amount": 5000, "currency": "NGN", "walletAddress": "0xB"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // An app session paid through the payment API: a check, a hold, a link.
    let start = json!({"userId": user, "chargerId": "evliter-lagos-victoria-island", "walletAddress": "0xB", "chain": "ledger",
                       "expectedMaxCost": 1000, "connectorId": 1});
    let (status, body) = server
        .api("POST", "/api/v1/session/start", Some(&token), Some(start))
        .await;
    assert_eq!(status, 201, "{body}");
    let session_id = body["data"]["sessionId"].as_str().unwrap().to_owned();
    server
        .api(
            "PUT",
            "/api/charging/sessions/active/update",
            Some(&token),
            Some(json!({"batteryLevel": 60, "energyDelivered": 4.2})),
        )
        .await;
    let (status, body) = server
        .api(
            "POST",
            "/api/v1/session/stop",
            Some(&token),
            Some(json!({"userId": user, "sessionId": session_id})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A check that fails: more than the wallet holds.
    let too_much = json!({"userId": user, "chargerId": "evliter-lagos-victoria-island", "walletAddress": "0xB", "chain": "ledger",
                          "expectedMaxCost": 9000, "connectorId": 1});
    let (status, _) = server
        .api(
            "POST",
            "/api/v1/session/start",
            Some(&token),
            Some(too_much),
        )
        .await;
    assert_eq!(status, 402);

    let view = get(&server, &admin, &format!("/api/admin/users/{user}")).await;
    assert_eq!(view["data"]["user"]["email"], "payer@example.com");
    assert_eq!(
        ids(&json!({"data": view["data"]["idTags"]}), "idTag"),
        vec!["PAYER-1"]
    );
    let wallets = view["data"]["wallets"].as_array().unwrap();
    let available = wallets.iter().find(|w| w["kind"] == "available").unwrap();
    assert_eq!(available["walletAddress"], "0xb");
    assert_eq!(available["balance"], 5000);
    assert_eq!(available["currency"], "NGN");

    // The ledger: the credit, the hold and its release, newest first.
    let ledger = get(&server, &admin, &format!("/api/admin/users/{user}/ledger")).await;
    let kinds = ids(&ledger, "kind");
    assert_eq!(
        ledger["pagination"]["total"].as_i64().unwrap(),
        kinds.len() as i64
    );
    assert_eq!(kinds.last().map(String::as_str), Some("credit"));
    assert!(
        kinds.iter().any(|k| k == "hold") && kinds.iter().any(|k| k == "release"),
        "{kinds:?}"
    );
    let credit = ledger["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (credit["amount"].clone(), credit["account"].clone()),
        (json!(5000), json!("available"))
    );
    assert!(ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["account"] == "held" && m["amount"] == 1000));
    let one = get(
        &server,
        &admin,
        &format!("/api/admin/users/{user}/ledger?limit=1"),
    )
    .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["entryId"], ledger["data"][0]["entryId"]);

    let links = get(&server, &admin, "/api/admin/payment-links?status=pending").await;
    assert_eq!(links["pagination"]["total"], 1);
    assert_eq!(links["data"][0]["sessionId"], session_id);
    assert_eq!(links["data"][0]["amount"], 693);
    let paid = get(&server, &admin, "/api/admin/payment-links?status=paid").await;
    assert_eq!(paid["pagination"]["total"], 0);
    let mine = get(
        &server,
        &admin,
        &format!("/api/admin/payment-links?userId={user}"),
    )
    .await;
    assert_eq!(mine["pagination"]["total"], 1);

    let checks = get(&server, &admin, "/api/admin/balance-checks").await;
    assert_eq!(checks["pagination"]["total"], 2);
    assert_eq!(checks["data"][0]["status"], "INSUFFICIENT", "newest first");
    let sufficient = get(
        &server,
        &admin,
        "/api/admin/balance-checks?status=SUFFICIENT",
    )
    .await;
    assert_eq!(sufficient["pagination"]["total"], 1);
    assert_eq!(sufficient["data"][0]["sessionId"], session_id);
    for path in [
        "/api/admin/payment-links?status=lost",
        "/api/admin/balance-checks?status=maybe",
    ] {
        let (status, body) = server.api("GET", path, Some(&admin), None).await;
        assert_eq!(
            (status, &body["details"]["field"]),
            (400, &json!("status")),
            "{path}"
        );
    }
    let (status, _) = server
        .api("GET", "/api/admin/users/nobody", Some(&admin), None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}

async fn admin_lists_search_and_page_in_the_database(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    for n in 1..=12 {
        server
            .state
            .store
            .provision_charger(&format!("CP-{n:03}"), None, None)
            .await
            .unwrap();
    }
    server
        .state
        .store
        .provision_charger("depot_50%", None, None)
        .await
        .unwrap();
    let (status, _) = server
        .api(
            "PUT",
            "/api/admin/stations/CP-007",
            Some(&admin),
            Some(json!({"name": "Harbour Depot", "pricePerKWh": 0.3, "currency": "EUR"})),
        )
        .await;
    assert_eq!(status, 200);

    let all = get(&server, &admin, "/api/admin/stations?limit=5").await;
    // 12 chargers, the literal-wildcard one and the demo station.
    assert_eq!(all["pagination"]["total"], 14);
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    let cp01 = get(&server, &admin, "/api/admin/stations?q=cp-01").await;
    assert_eq!(ids(&cp01, "id"), vec!["CP-010", "CP-011", "CP-012"]);
    let page = get(
        &server,
        &admin,
        "/api/admin/stations?q=cp-00&limit=2&offset=2",
    )
    .await;
    assert_eq!(
        page["pagination"],
        json!({"total": 9, "limit": 2, "offset": 2})
    );
    assert_eq!(ids(&page, "id"), vec!["CP-003", "CP-004"]);
    let by_name = get(&server, &admin, "/api/admin/stations?q=harbour").await;
    assert_eq!(ids(&by_name, "id"), vec!["CP-007"]);
    // `%` and `_` are themselves, not wildcards.
    let literal = get(&server, &admin, "/api/admin/stations?q=50%25").await;
    assert_eq!(ids(&literal, "id"), vec!["depot_50%"]);
    let underscore = get(&server, &admin, "/api/admin/stations?q=t_5").await;
    assert_eq!(ids(&underscore, "id"), vec!["depot_50%"]);
    let nothing = get(&server, &admin, "/api/admin/stations?q=CP_0").await;
    assert_eq!(nothing["pagination"]["total"], 0);

    server.user_with_tag("alice", "RFID-ALICE").await;
    server.user_with_tag("bob", "RFID-BOB").await;
    server
        .id_tag("RFID-BOB-2", Some("bob"), "Blocked", None)
        .await;
    let users = get(&server, &admin, "/api/admin/users?q=ALICE").await;
    assert_eq!(ids(&users, "id"), vec!["alice"]);
    let by_email = get(&server, &admin, "/api/admin/users?q=bob@example").await;
    assert_eq!(ids(&by_email, "id"), vec!["bob"]);
    let tags = get(&server, &admin, "/api/admin/id-tags?q=bob").await;
    assert_eq!(ids(&tags, "idTag"), vec!["RFID-BOB", "RFID-BOB-2"]);
    let tags = get(&server, &admin, "/api/admin/id-tags?q=rfid&userId=alice").await;
    assert_eq!(ids(&tags, "idTag"), vec!["RFID-ALICE"]);
    let everyone = get(&server, &admin, "/api/admin/users?q=").await;
    assert_eq!(everyone["pagination"]["total"], 2);
    server.stop().await;
}

async fn the_console_endpoints_are_for_operators_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (user, driver) = server.register("nosy@example.com").await;
    for path in [
        "/api/admin/sessions/history".to_owned(),
        "/api/admin/transactions/1".to_owned(),
        "/api/admin/transactions/1/messages".to_owned(),
        format!("/api/admin/users/{user}"),
        format!("/api/admin/users/{user}/ledger"),
        "/api/admin/payment-links".to_owned(),
        "/api/admin/balance-checks".to_owned(),
    ] {
        let (status, _) = server.api("GET", &path, Some(&driver), None).await;
        assert_eq!(status, 403, "{path} with a driver's token");
        let (status, _) = server.api("GET", &path, None, None).await;
        assert_eq!(status, 401, "{path} without a token");
    }
    server.stop().await;
}

async fn the_operator_stream_tells_boots_and_heartbeats(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token("ops", "admin");
    let mut response = http()
        .get(server.http_url("/api/admin/events"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut charger = server.booted_charger("CP-LIVE").await;
    charger.call("Heartbeat", json!({})).await;
    let mut buffer = String::new();
    let mut seen: Vec<(String, Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.iter().any(|(n, _)| n == "charger.booted")
        && seen.iter().any(|(n, _)| n == "charger.heartbeat"))
    {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the boot and heartbeat events within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(|n| n.trim().to_owned());
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|d| serde_json::from_str(d.trim()).unwrap());
            if let (Some(name), Some(data)) = (name, data) {
                seen.push((name, data));
            }
        }
    }
    let booted = &seen.iter().find(|(n, _)| n == "charger.booted").unwrap().1;
    assert_eq!(booted["chargerId"], "CP-LIVE");
    assert_eq!(booted["vendor"], "TestVendor");
    assert_eq!(booted["model"], "TestModel");
    assert_eq!(booted["firmwareVersion"], "1.0.0");
    assert_eq!(booted["registrationStatus"], "Accepted");
    let heartbeat = &seen
        .iter()
        .find(|(n, _)| n == "charger.heartbeat")
        .unwrap()
        .1;
    assert_eq!(heartbeat["chargerId"], "CP-LIVE");
    // The heartbeat's time is the one stored.
    let (_, station) = server
        .api("GET", "/api/admin/stations/CP-LIVE", Some(&admin), None)
        .await;
    assert_eq!(heartbeat["at"], station["data"]["lastHeartbeat"]);
    charger.close().await;
    server.stop().await;
}

fn csms_user(database_url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_csms"))
        .args(["--database-url", database_url, "user"])
        .args(args)
        .env_remove("CSMS_DATABASE_URL")
        .env_remove("CSMS_USER_PASSWORD")
        .output()
        .expect("csms user runs")
}

async fn csms_user_makes_an_operator_who_can_log_in(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = server.db.url.clone();
    let made = csms_user(
        &url,
        &[
            "--email",
            "Ops@Example.com",
            "--password",
            "first-pass-1",
            "--role",
            "admin",
        ],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let login = |password: &'static str| {
        let server = &server;
        async move {
            server
                .api(
                    "POST",
                    "/api/auth/login",
                    None,
                    Some(json!({"email": "ops@example.com", "password": password})),
                )
                .await
        }
    };
    let (status, body) = login("first-pass-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["role"], "admin");
    let id = body["data"]["user"]["id"].clone();
    let token = body["data"]["token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .api("GET", "/api/admin/sessions/history", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    // Again with the same email: the same user, a new password.
    let again = csms_user(
        &url,
        &["--email", "ops@example.com", "--password", "second-pass-2"],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let (status, _) = login("first-pass-1").await;
    assert_eq!(status, 401);
    let (status, body) = login("second-pass-2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["user"]["id"], id);
    // A short password or an address without @ changes nothing.
    for args in [
        ["--email", "ops@example.com", "--password", "short"],
        ["--email", "not-an-address", "--password", "long-enough-1"],
    ] {
        let refused = csms_user(&url, &args);
        assert!(!refused.status.success(), "{args:?}");
    }
    let (status, _) = login("second-pass-2").await;
    assert_eq!(status, 200);
    server.stop().await;
}
