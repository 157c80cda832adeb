//! A small fake central system for the integration tests: it accepts chargers
//! on `/ocpp/{id}`, answers BootNotification Accepted with an interval,
//! StartTransaction with an incrementing transactionId (the same one for a
//! retransmission), records every frame, and can send commands to a charger.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// One CALL a charger sent.
#[derive(Debug, Clone)]
pub struct Received {
    pub charger: String,
    pub id: String,
    pub action: String,
    pub payload: Value,
    /// The connection it came on (1 for the first connection of the charger).
    pub connection: u32,
}

type ServerCall = (String, Value, oneshot::Sender<Value>);

#[derive(Default)]
struct State {
    calls: Vec<Received>,
    raw: Vec<(String, String)>,
    next_tx: i32,
    /// (charger, connector, idTag, meterStart, timestamp) -> transactionId, so a
    /// retransmitted StartTransaction gets the same id.
    tx_by_content: HashMap<String, i32>,
    chargers: HashMap<String, mpsc::Sender<ServerCall>>,
    connections: HashMap<String, u32>,
    subprotocols: Vec<Option<String>>,
    /// CALLs that arrived while an earlier CALL of the same connection was unanswered.
    overlapping_calls: u32,
    auth_headers: Vec<Option<String>>,
    /// Answers still to break, per action (see [`FakeCsms::break_next_answer`]).
    broken_answers: HashMap<String, u32>,
}

#[derive(Clone)]
pub struct FakeCsms {
    pub url: String,
    pub heartbeat_interval: u64,
    /// How long the server takes to answer each CALL.
    pub answer_delay: Duration,
    state: Arc<Mutex<State>>,
}

impl FakeCsms {
    pub async fn start() -> FakeCsms {
        Self::start_with_interval(300).await
    }

    pub async fn start_with_interval(heartbeat_interval: u64) -> FakeCsms {
        Self::start_with(heartbeat_interval, Duration::ZERO).await
    }

    pub async fn start_with(heartbeat_interval: u64, answer_delay: Duration) -> FakeCsms {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            next_tx: 100,
            ..Default::default()
        }));
        let csms = FakeCsms {
            url: format!("ws://{addr}/ocpp"),
            heartbeat_interval,
            answer_delay,
            state,
        };
        let server = csms.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        csms
    }

    #[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
    async fn serve(&self, stream: tokio::net::TcpStream) {
        let mut path = String::new();
        let mut protocol = None;
        let mut auth = None;
        let callback = |req: &Request, mut resp: Response| {
            path = req.uri().path().to_string();
            protocol = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            auth = req
                .headers()
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            if protocol.as_deref().is_some_and(|p| p.contains("ocpp1.6")) {
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static("ocpp1.6"),
                );
            }
            Ok(resp)
        };
        // Small buffers here too, so the fake server stays light in the scale test.
        let config = csms_sim::charger::connection::ws_config();
        let Ok(mut ws) =
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
        else {
            return;
        };
        let charger = path.rsplit('/').next().unwrap_or_default().to_string();
        let (tx, mut rx) = mpsc::channel::<ServerCall>(8);
        let connection = {
            let mut s = self.state.lock().unwrap();
            s.subprotocols.push(protocol);
            s.auth_headers.push(auth);
            s.chargers.insert(charger.clone(), tx);
            let n = s.connections.entry(charger.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let mut waiting: HashMap<String, oneshot::Sender<Value>> = HashMap::new();
        let mut next_id = 0;
        let (answers_tx, mut answers) = mpsc::unbounded_channel::<String>();
        let mut unanswered = 0u32;
        loop {
            tokio::select! {
                m = ws.next() => {
                    let Some(Ok(Message::Text(text))) = m else { break };
                    self.state.lock().unwrap().raw.push((charger.clone(), text.to_string()));
                    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) else { continue };
                    match items.first().and_then(Value::as_u64) {
                        Some(2) => {
                            let id = items[1].as_str().unwrap_or_default().to_string();
                            let action = items[2].as_str().unwrap_or_default().to_string();
                            let payload = items.get(3).cloned().unwrap_or(json!({}));
                            let answer = self.answer(&charger, &action, &payload);
                            self.state.lock().unwrap().calls.push(Received {
                                charger: charger.clone(), id: id.clone(), action, payload, connection,
                            });
                            let frame = json!([3, id, answer]).to_string();
                            if unanswered > 0 {
                                self.state.lock().unwrap().overlapping_calls += 1;
                            }
                            unanswered += 1;
                            let (delay, answers_tx) = (self.answer_delay, answers_tx.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = answers_tx.send(frame);
                            });
                        }
                        Some(3) | Some(4) => {
                            let id = items[1].as_str().unwrap_or_default().to_string();
                            if let Some(w) = waiting.remove(&id) {
                                let _ = w.send(Value::Array(items.clone()));
                            }
                        }
                        _ => {}
                    }
                }
                Some(frame) = answers.recv() => {
                    unanswered -= 1;
                    if ws.send(Message::text(frame)).await.is_err() { break; }
                }
                c = rx.recv() => {
                    let Some((action, payload, reply)) = c else { break };
                    next_id += 1;
                    let id = format!("srv-{next_id}");
                    waiting.insert(id.clone(), reply);
                    if ws.send(Message::text(json!([2, id, action, payload]).to_string())).await.is_err() { break; }
                }
            }
        }
    }

    /// The next answer to `action` carries a field its schema does not define.
    pub fn break_next_answer(&self, action: &str) {
        *self
            .state
            .lock()
            .unwrap()
            .broken_answers
            .entry(action.to_string())
            .or_default() += 1;
    }

    fn answer(&self, charger: &str, action: &str, p: &Value) -> Value {
        if let Some(n) = self
            .state
            .lock()
            .unwrap()
            .broken_answers
            .get_mut(action)
            .filter(|n| **n > 0)
        {
            *n -= 1;
            return json!({ "surprise": true });
        }
        let now = ocpp_j::time::format_ms(chrono::Utc::now());
        let accepted = json!({ "idTagInfo": { "status": "Accepted" } });
        match action {
            "BootNotification" => {
                json!({ "status": "Accepted", "currentTime": now, "interval": self.heartbeat_interval })
            }
            "Heartbeat" => json!({ "currentTime": now }),
            "Authorize" | "StopTransaction" => {
                if p["idTag"] == "BAD" {
                    json!({ "idTagInfo": { "status": "Invalid" } })
                } else {
                    accepted
                }
            }
            "StartTransaction" => {
                let key = format!(
                    "{charger}|{}|{}|{}|{}",
                    p["connectorId"], p["idTag"], p["meterStart"], p["timestamp"]
                );
                let mut s = self.state.lock().unwrap();
                let id = match s.tx_by_content.get(&key) {
                    Some(id) => *id,
                    None => {
                        s.next_tx += 1;
                        let id = s.next_tx;
                        s.tx_by_content.insert(key, id);
                        id
                    }
                };
                let status = if p["idTag"] == "BAD" {
                    "Invalid"
                } else {
                    "Accepted"
                };
                json!({ "transactionId": id, "idTagInfo": { "status": status } })
            }
            "DataTransfer" => json!({ "status": "Accepted" }),
            _ => json!({}),
        }
    }

    /// Sends a CALL to a connected charger and returns its answer frame.
    pub async fn call(&self, charger: &str, action: &str, payload: Value) -> Value {
        let sender = self
            .state
            .lock()
            .unwrap()
            .chargers
            .get(charger)
            .cloned()
            .expect("charger not connected");
        let (tx, rx) = oneshot::channel();
        sender
            .send((action.to_string(), payload, tx))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("no answer")
            .unwrap()
    }

    pub fn calls(&self) -> Vec<Received> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn actions(&self, charger: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.charger == charger)
            .map(|c| c.action)
            .collect()
    }

    pub fn of(&self, action: &str) -> Vec<Received> {
        self.calls()
            .into_iter()
            .filter(|c| c.action == action)
            .collect()
    }

    pub fn raw(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().raw.clone()
    }

    pub fn overlapping_calls(&self) -> u32 {
        self.state.lock().unwrap().overlapping_calls
    }

    pub fn subprotocols(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().subprotocols.clone()
    }

    pub fn auth_headers(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().auth_headers.clone()
    }

    /// Waits until `f` holds for the recorded calls.
    pub async fn wait_until(&self, what: &str, mut f: impl FnMut(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if f(&self.calls()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; got {:?}",
                    self.calls().iter().map(|c| &c.action).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
