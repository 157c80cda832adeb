//! The trivial server (`csms-sim trivial-server`): the reference a benchmark
//! compares the real server with. It speaks OCPP 1.6J at `/ocpp/{id}`
//! (subprotocol `ocpp1.6`) and answers every CALL with a fixed,
//! schema-valid CALLRESULT for its action, reading nothing but the message
//! id and the action: no storage, no validation, no state beyond a
//! transaction counter. Whatever the load generator measures against it is
//! what this machine, this WebSocket stack and this generator can do.
//!
//! It uses the simulator's own WebSocket stack (tokio-tungstenite) with the
//! same small buffers as the chargers, answers `GET /health` like the real
//! server so the benchmark waits for both the same way, and on SIGTERM (or
//! Ctrl-C) closes every connection with a close frame (1001) before it
//! exits, so its shutdown time is a fair floor for the real server's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::charger::connection::ws_config;
use ocpp_j::time::format_ms;

/// What every connection shares: the heartbeat interval it hands out and the
/// next transactionId.
struct Answers {
    heartbeat_interval_s: u64,
    next_transaction: AtomicI64,
}

impl Answers {
    /// The answer frame to one text frame, or `None` for anything that is not
    /// a CALL (answers, garbage), which a central system ignores.
    fn to(&self, text: &str) -> Option<String> {
        // A 4-element array whose first three elements are read; the payload
        // is skipped unparsed into values.
        let (kind, id, action, _): (u8, String, String, IgnoredAny) =
            serde_json::from_str(text).ok()?;
        if kind != 2 {
            return None;
        }
        let id = serde_json::to_string(&id).ok()?;
        let now = || format_ms(chrono::Utc::now());
        let payload = match action.as_str() {
            "BootNotification" => format!(
                r#"{{"status":"Accepted","currentTime":"{}","interval":{}}}"#,
                now(),
                self.heartbeat_interval_s
            ),
            "Heartbeat" => format!(r#"{{"currentTime":"{}"}}"#, now()),
            "StartTransaction" => format!(
                r#"{{"transactionId":{},"idTagInfo":{{"status":"Accepted"}}}}"#,
                self.next_transaction.fetch_add(1, Ordering::Relaxed)
            ),
            "Authorize" => r#"{"idTagInfo":{"status":"Accepted"}}"#.to_string(),
            "DataTransfer" => r#"{"status":"UnknownVendorId"}"#.to_string(),
            "MeterValues"
            | "StatusNotification"
            | "StopTransaction"
            | "FirmwareStatusNotification"
            | "DiagnosticsStatusNotification" => "{}".to_string(),
            _ => return Some(format!(r#"[4,{id},"NotImplemented","",{{}}]"#)),
        };
        Some(format!("[3,{id},{payload}]"))
    }
}

/// Serves until SIGTERM or Ctrl-C, then closes every connection and returns.
pub async fn serve(listen: SocketAddr, heartbeat_interval: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "trivial server listening");
    let answers = Arc::new(Answers {
        heartbeat_interval_s: heartbeat_interval.as_secs().max(1),
        next_transaction: AtomicI64::new(1),
    });
    let (stop, stopped) = watch::channel(false);
    // Every connection holds a clone of `done`; when the last one is dropped,
    // `all_done` yields None: every connection has finished.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (answers, stopped, done) = (answers.clone(), stopped.clone(), done.clone());
                tokio::spawn(async move {
                    connection(stream, &answers, stopped).await;
                    drop(done);
                });
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    drop(done);
    let _ = tokio::time::timeout(Duration::from_secs(10), all_done.recv()).await;
    Ok(())
}

/// How long a new connection may take to send its request.
const FIRST_READ: Duration = Duration::from_secs(10);

const HEALTH: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"status\":\"ok\"}";

async fn connection(mut stream: TcpStream, answers: &Answers, mut stopped: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    // `GET /health` is answered like the real server does, so the benchmark
    // waits for both servers the same way.
    let mut head = [0u8; 11];
    match tokio::time::timeout(FIRST_READ, stream.peek(&mut head)).await {
        Ok(Ok(n)) if &head[..n] == b"GET /health" => {
            let _ = stream.write_all(HEALTH).await;
            let _ = stream.shutdown().await;
            return;
        }
        Ok(Ok(_)) => {}
        // Silent or broken: a client that says nothing holds nothing here.
        _ => return,
    }
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, handshake, Some(ws_config()));
    let Ok(Ok(mut ws)) = tokio::time::timeout(FIRST_READ, accept).await else {
        return;
    };
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(answer) = answers.to(&text) {
                        if ws.send(Message::text(answer)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = stopped.changed() => {
                let _ = ws
                    .close(Some(CloseFrame { code: CloseCode::Away, reason: "shutting down".into() }))
                    .await;
                return;
            }
        }
    }
}

/// Accepts `/ocpp/{id}` only, and chooses `ocpp1.6` when the charger offers it.
#[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
fn handshake(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let path = request.uri().path();
    if !path.starts_with("/ocpp/") || path.len() == "/ocpp/".len() {
        let mut refused = ErrorResponse::new(Some("not found".into()));
        *refused.status_mut() = StatusCode::NOT_FOUND;
        return Err(refused);
    }
    let offers_ocpp16 = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "ocpp1.6");
    if offers_ocpp16 {
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("ocpp1.6"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn answers() -> Answers {
        Answers {
            heartbeat_interval_s: 30,
            next_transaction: AtomicI64::new(7),
        }
    }

    fn parse(text: Option<String>) -> Value {
        serde_json::from_str(&text.expect("an answer")).unwrap()
    }

    #[test]
    fn every_call_gets_the_fixed_answer_of_its_action() {
        let a = answers();
        let boot = parse(
            a.to(r#"[2,"b1","BootNotification",{"chargePointVendor":"x","chargePointModel":"y"}]"#),
        );
        assert_eq!((boot[0].as_u64(), boot[1].as_str()), (Some(3), Some("b1")));
        assert_eq!(boot[2]["status"], "Accepted");
        assert_eq!(boot[2]["interval"], 30);
        assert!(boot[2]["currentTime"].as_str().unwrap().ends_with('Z'));
        let start = parse(a.to(r#"[2,"s","StartTransaction",{}]"#));
        assert_eq!(start[2]["transactionId"], 7);
        assert_eq!(start[2]["idTagInfo"]["status"], "Accepted");
        let next = parse(a.to(r#"[2,"s2","StartTransaction",{}]"#));
        assert_eq!(next[2]["transactionId"], 8);
        let meter = parse(a.to(r#"[2,"m \"q\"","MeterValues",{"meterValue":[1.5e300]}]"#));
        assert_eq!(meter, serde_json::json!([3, "m \"q\"", {}]));
        let unknown = parse(a.to(r#"[2,"u","Teleport",{}]"#));
        assert_eq!(
            (unknown[0].as_u64(), unknown[2].as_str()),
            (Some(4), Some("NotImplemented"))
        );
    }

    #[test]
    fn anything_but_a_call_is_ignored() {
        let a = answers();
        assert!(a.to(r#"[3,"x",{}]"#).is_none());
        assert!(a.to(r#"[4,"x","GenericError","",{}]"#).is_none());
        assert!(a.to("not json").is_none());
    }
}
