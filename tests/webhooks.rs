//! Outgoing webhooks, delivered to a real HTTP receiver on a real port:
//! signed, at least once with a stable id, retried while the receiver is
//! down, and still delivered after a server restart.

mod common;

use common::{Backend, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

on_both_backends!(
    session_and_charger_events_arrive_signed,
    a_receiver_that_was_down_gets_every_event_once_it_is_back,
    events_queued_before_a_restart_are_delivered_after_it,
);

const SECRET: &str = "whsec-test-secret";

#[derive(Clone, Debug)]
struct Received {
    signature: String,
    event_id_header: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver: records what it is sent; answers 503 to the first
/// `refuse` requests.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let receiver = Receiver {
            url,
            received: Default::default(),
            refuse: Default::default(),
            refused: Default::default(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    if state
                        .refuse
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        state.refused.fetch_add(1, Ordering::SeqCst);
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    state.received.lock().unwrap().push(Received {
                        signature: header("csms-signature"),
                        event_id_header: header("csms-event-id"),
                        body,
                    });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (bounded) until an event of `kind` has arrived, and returns it.
    async fn wait_for(&self, kind: &str) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.all().into_iter().find(|r| r.json()["type"] == kind) {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {kind} webhook within 10 s; got {:?}",
                self.all()
                    .iter()
                    .map(|r| r.json()["type"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn configure(receiver: &Receiver) -> impl FnOnce(&mut csms::config::Config) + '_ {
    move |c| {
        c.webhook_urls = csms::config::parse_webhook_urls(&receiver.url).unwrap();
        c.webhook_secret = Some(SECRET.into());
        c.webhook_retry = Duration::from_millis(100);
    }
}

/// Checks `CSMS-Signature: t=…,v1=…` as a receiver would.
fn assert_signed(r: &Received) {
    let (t, v1) = r
        .signature
        .split_once(',')
        .unwrap_or_else(|| panic!("bad signature header {:?}", r.signature));
    let t = t.strip_prefix("t=").expect("t=");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..300).contains(&age), "signed {age} s ago");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the signature matches the body");
}

/// An app session (started, ended) by a driver.
async fn app_session(server: &TestServer, user: &str) -> String {
    let token = server.token(user, "driver");
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/start",
            Some(&token),
            Some(json!({"stationId": "HUB-HOOKS", "connectorId": format!("c-{user}"), "batteryLevelStart": 40})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["data"]["id"]
        .as_str()
        .or(body["session"]["id"].as_str())
        .or(body["data"]["session"]["id"].as_str())
        .unwrap_or_else(|| panic!("no session id in {body}"))
        .to_owned();
    let (status, body) = server
        .api(
            "POST",
            "/api/charging/sessions/end",
            Some(&token),
            Some(json!({"sessionId": id, "batteryLevelEnd": 60})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

async fn session_and_charger_events_arrive_signed(backend: Backend) {
    let receiver = Receiver::start().await;
    let server = TestServer::start_with(backend, configure(&receiver)).await;
    let id = app_session(&server, "driver-h").await;

    let started = receiver.wait_for("session.started").await;
    let completed = receiver.wait_for("session.completed").await;
    for r in [&started, &completed] {
        assert_signed(r);
        let v = r.json();
        assert_eq!(r.event_id_header, v["id"].as_str().unwrap());
        assert!(v["id"].as_str().unwrap().starts_with("evt_"), "{v}");
        assert!(v["createdAt"].as_str().unwrap().ends_with('Z'), "{v}");
        assert_eq!(v["data"]["id"], id.as_str(), "{v}");
        assert_eq!(v["data"]["userId"], "driver-h", "{v}");
    }
    let done = completed.json()["data"].clone();
    assert_eq!(done["status"], "completed");
    // 40 % → 60 % of the default 60 kWh battery: 12 kWh at 165 NGN.
    assert_eq!(done["energyWh"], 12000.0, "{done}");
    assert_eq!(done["costMinor"], 198000, "{done}");
    assert_eq!(done["currency"], "NGN");

    let charger = server.booted_charger("CP-HOOKS").await;
    let connected = receiver.wait_for("charger.connected").await;
    assert_signed(&connected);
    assert_eq!(connected.json()["data"]["chargerId"], "CP-HOOKS");
    charger.close().await;
    let gone = receiver.wait_for("charger.disconnected").await;
    assert_eq!(gone.json()["data"]["chargerId"], "CP-HOOKS");

    // Each event once (the receiver answered every one at once).
    let ids: Vec<String> = receiver
        .all()
        .iter()
        .map(|r| r.event_id_header.clone())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "{ids:?}");

    // Ended deliveries are kept until pruned; pruning takes exactly those.
    let store = &server.state.store;
    assert_eq!(
        store.prune_webhooks(0).await.unwrap(),
        0,
        "nothing that old"
    );
    let pruned = store.prune_webhooks(i64::MAX).await.unwrap();
    assert_eq!(pruned as usize, ids.len());
    assert_eq!(store.prune_webhooks(i64::MAX).await.unwrap(), 0);
    server.stop().await;
}

async fn a_receiver_that_was_down_gets_every_event_once_it_is_back(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.refuse.store(3, Ordering::SeqCst);
    let server = TestServer::start_with(backend, configure(&receiver)).await;
    let id = app_session(&server, "driver-r").await;
    let started = receiver.wait_for("session.started").await;
    let completed = receiver.wait_for("session.completed").await;
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 3);
    assert_eq!(started.json()["data"]["id"], id.as_str());
    assert_eq!(completed.json()["data"]["id"], id.as_str());
    assert_eq!(
        receiver.all().len(),
        2,
        "each event delivered once it got through"
    );
    server.stop().await;
}

async fn events_queued_before_a_restart_are_delivered_after_it(backend: Backend) {
    let receiver = Receiver::start().await;
    // Down for longer than the first server lives.
    receiver.refuse.store(usize::MAX, Ordering::SeqCst);
    let server = TestServer::start_with(backend, configure(&receiver)).await;
    let id = app_session(&server, "driver-s").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.refused.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery attempts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = server.stop().await;
    assert!(receiver.all().is_empty());

    receiver.refuse.store(0, Ordering::SeqCst);
    let server = TestServer::start_on(db, configure(&receiver)).await;
    let completed = receiver.wait_for("session.completed").await;
    assert_eq!(completed.json()["data"]["id"], id.as_str());
    receiver.wait_for("session.started").await;
    server.stop().await;
}
