//! Load mode: many connections sending a fixed mix of charger-to-server
//! messages at a given rate (or as fast as the server answers), measuring
//! throughput and latency. Unlike a fleet, there is no physics here: each
//! connection is a lean loop that still keeps to one outstanding CALL.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::charger::connection::{self, Ws};
use crate::Endpoint;
use ocpp_j::frame::{self, Call, Frame};
use ocpp_j::time::format_ms;
use ocpp_j::{CallError, ErrorCode};

/// The message kinds a load run can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Heartbeat,
    Status,
    Authorize,
    Meter,
    /// A StartTransaction, or the StopTransaction of the one started before.
    Transaction,
    DataTransfer,
}

impl Kind {
    fn parse(s: &str) -> anyhow::Result<Kind> {
        Ok(match s {
            "heartbeat" => Kind::Heartbeat,
            "status" => Kind::Status,
            "authorize" => Kind::Authorize,
            "meter" => Kind::Meter,
            "transaction" => Kind::Transaction,
            "datatransfer" => Kind::DataTransfer,
            other => bail!("unknown message kind {other} (heartbeat, status, authorize, meter, transaction, datatransfer)"),
        })
    }
}

/// Weighted message mix, e.g. `heartbeat=50,meter=30,status=20`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl Mix {
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, w) = part.split_once('=').unwrap_or((part, "1"));
            out.push((
                Kind::parse(k.trim())?,
                w.trim()
                    .parse()
                    .with_context(|| format!("weight in {part}"))?,
            ));
        }
        if out.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            bail!("the mix has no weight");
        }
        Ok(Mix(out))
    }

    fn pick(&self, rng: &mut impl Rng) -> Kind {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.random_range(0..total);
        for (k, w) in &self.0 {
            if x < *w {
                return *k;
            }
            x -= w;
        }
        self.0[0].0
    }
}

impl Default for Mix {
    fn default() -> Self {
        Mix(vec![
            (Kind::Heartbeat, 40),
            (Kind::Meter, 40),
            (Kind::Status, 10),
            (Kind::Authorize, 5),
            (Kind::Transaction, 5),
        ])
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub endpoint: Endpoint,
    pub connections: usize,
    pub id_prefix: String,
    pub password: Option<String>,
    /// Messages per second over all connections; 0 sends each next message as
    /// soon as the previous one is answered.
    pub rate: f64,
    pub run_for: Duration,
    pub ramp_up: Duration,
    pub mix: Mix,
    pub timeout: Duration,
    pub seed: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            endpoint: Endpoint::default(),
            connections: 10,
            id_prefix: "LOAD-".into(),
            password: None,
            rate: 0.0,
            run_for: Duration::from_secs(10),
            ramp_up: Duration::from_secs(1),
            mix: Mix::default(),
            timeout: Duration::from_secs(10),
            seed: 1,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub connections: usize,
    pub connected: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub elapsed_s: f64,
    pub sent: u64,
    pub answered: u64,
    /// CALLERRORs received.
    pub errors: u64,
    pub timeouts: u64,
    /// Answered messages per second over the measured period.
    pub throughput: f64,
    pub latency: Latency,
    pub per_kind: BTreeMap<String, u64>,
    pub error_codes: BTreeMap<String, u64>,
}

impl LoadReport {
    pub fn to_text(&self) -> String {
        let l = &self.latency;
        format!(
            "{} connections ({} connected, {} failed, {} dropped) for {:.1} s\n\
             sent {} answered {} errors {} timeouts {}\n\
             throughput {:.1} msg/s\n\
             latency ms: p50 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} mean {:.2}\n\
             mix: {:?}\nerror codes: {:?}\n",
            self.connections,
            self.connected,
            self.connect_failures,
            self.disconnects,
            self.elapsed_s,
            self.sent,
            self.answered,
            self.errors,
            self.timeouts,
            self.throughput,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            l.mean_ms,
            self.per_kind,
            self.error_codes
        )
    }
}

#[derive(Default)]
struct Shared {
    connected: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    /// One histogram for the run; a std Mutex held only to record a value.
    latency: Mutex<Option<Histogram<u64>>>,
    per_kind: Mutex<BTreeMap<String, u64>>,
    error_codes: Mutex<BTreeMap<String, u64>>,
}

pub async fn run(cfg: LoadConfig) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(cfg.connections > 0, "load needs at least one connection");
    let shared = Arc::new(Shared::default());
    *shared.latency.lock().unwrap() = Some(latency_histogram());
    let started = Instant::now();
    let end = started + cfg.ramp_up + cfg.run_for;
    let cfg = Arc::new(cfg);
    let mut tasks = Vec::new();
    for i in 0..cfg.connections {
        let (cfg, shared) = (cfg.clone(), shared.clone());
        let offset = cfg.ramp_up.mul_f64(i as f64 / cfg.connections as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(started + offset).await;
            if let Err(e) = connection_loop(i, &cfg, &shared, end).await {
                tracing::debug!("load connection {i}: {e:#}");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let h = shared.latency.lock().unwrap().take().unwrap();
    let answered = shared.answered.load(Ordering::Relaxed);
    let measured = (elapsed - cfg.ramp_up.as_secs_f64() / 2.0).max(1e-3);
    let per_kind = shared.per_kind.lock().unwrap().clone();
    let error_codes = shared.error_codes.lock().unwrap().clone();
    Ok(LoadReport {
        connections: cfg.connections,
        connected: shared.connected.load(Ordering::Relaxed),
        connect_failures: shared.connect_failures.load(Ordering::Relaxed),
        disconnects: shared.disconnects.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        sent: shared.sent.load(Ordering::Relaxed),
        answered,
        errors: shared.errors.load(Ordering::Relaxed),
        timeouts: shared.timeouts.load(Ordering::Relaxed),
        throughput: answered as f64 / measured,
        latency: Latency::of(&h),
        per_kind,
        error_codes,
    })
}

/// A histogram for latencies in microseconds, from 1 µs to 10 minutes, three
/// significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// How a CALL ended: its CALLRESULT payload, a CALLERROR code, or no answer in time.
pub enum Outcome {
    Answer(Value),
    Error(String),
    Timeout,
}

/// Sends one CALL and waits for its answer, answering any server CALL meanwhile.
pub(crate) async fn call(
    ws: &mut Ws,
    id: String,
    action: &str,
    payload: Value,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let text = frame::encode_call(&id, action, &payload);
    call_text(ws, &id, text, timeout).await
}

/// [`call`] with the frame already serialised (message id `id`), for load
/// generators that build their frames without a JSON tree.
pub(crate) async fn call_text(
    ws: &mut Ws,
    id: &str,
    text: String,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    ws.send(Message::text(text)).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(message) = next else {
            return Ok(Outcome::Timeout);
        };
        let text = match message.context("connection closed")?? {
            Message::Text(t) => t,
            Message::Close(_) => bail!("connection closed"),
            _ => continue,
        };
        match frame::parse(&text) {
            Ok(Frame::CallResult { id: got, payload }) if got == id => {
                return Ok(Outcome::Answer(payload))
            }
            Ok(Frame::CallError { id: got, code, .. }) if got == id => {
                return Ok(Outcome::Error(code))
            }
            Ok(Frame::Call(Call { id: server_id, .. })) => {
                let answer = CallError::new(ErrorCode::NotSupported, "load generator");
                ws.send(Message::text(frame::encode_error(&server_id, &answer)))
                    .await?;
            }
            _ => {}
        }
    }
}

async fn connection_loop(
    index: usize,
    cfg: &LoadConfig,
    shared: &Shared,
    end: Instant,
) -> anyhow::Result<()> {
    let id = format!("{}{:05}", cfg.id_prefix, index + 1);
    let source = (!cfg.endpoint.source_addrs.is_empty())
        .then(|| cfg.endpoint.source_addrs[index % cfg.endpoint.source_addrs.len()]);
    let mut ws = match connection::connect(
        &cfg.endpoint,
        &id,
        cfg.password.as_deref(),
        source,
        cfg.timeout,
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => {
            shared.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut rng =
        ChaCha8Rng::seed_from_u64(cfg.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut n = 0u64;
    let mut next_id = || {
        n += 1;
        format!("{index}-{n}")
    };
    // Boot first: a server refuses other messages from an unregistered charger.
    let boot = json!({ "chargePointVendor": "csms-sim", "chargePointModel": "Load" });
    match call(&mut ws, next_id(), "BootNotification", boot, cfg.timeout).await? {
        Outcome::Answer(a) if a["status"] == "Accepted" => {}
        _ => bail!("boot not accepted"),
    }
    let period =
        (cfg.rate > 0.0).then(|| Duration::from_secs_f64(cfg.connections as f64 / cfg.rate));
    let mut next_send = Instant::now()
        + period
            .map(|p| p.mul_f64(rng.random_range(0.0..1.0)))
            .unwrap_or_default();
    let mut meter = rng.random_range(0..1_000_000u64);
    let mut open_tx: Option<i64> = None;
    while Instant::now() < end {
        if let Some(p) = period {
            if next_send >= end {
                break;
            }
            tokio::time::sleep_until(next_send).await;
            next_send += p;
        }
        let kind = cfg.mix.pick(&mut rng);
        meter += rng.random_range(0..500u64);
        let now = format_ms(chrono::Utc::now());
        let (action, payload) = match kind {
            Kind::Heartbeat => ("Heartbeat", json!({})),
            Kind::Status => {
                let status =
                    ["Available", "Preparing", "Charging", "Finishing"][rng.random_range(0..4)];
                (
                    "StatusNotification",
                    json!({ "connectorId": 1, "errorCode": "NoError", "status": status, "timestamp": now }),
                )
            }
            Kind::Authorize => ("Authorize", json!({ "idTag": format!("TAG-{id}") })),
            Kind::Meter => {
                let mut p = json!({ "connectorId": 1, "meterValue": [{ "timestamp": now, "sampledValue": [
                    { "value": meter.to_string(), "context": "Sample.Periodic", "measurand": "Energy.Active.Import.Register", "unit": "Wh" },
                    { "value": "11000", "context": "Sample.Periodic", "measurand": "Power.Active.Import", "unit": "W" },
                ]}]});
                if let Some(tx) = open_tx {
                    p["transactionId"] = json!(tx);
                }
                ("MeterValues", p)
            }
            Kind::Transaction => match open_tx.take() {
                None => (
                    "StartTransaction",
                    json!({ "connectorId": 1, "idTag": format!("TAG-{id}"), "meterStart": meter, "timestamp": now }),
                ),
                Some(tx) => (
                    "StopTransaction",
                    json!({ "transactionId": tx, "idTag": format!("TAG-{id}"), "meterStop": meter, "timestamp": now, "reason": "Local" }),
                ),
            },
            Kind::DataTransfer => (
                "DataTransfer",
                json!({ "vendorId": "csms-sim", "messageId": "load", "data": "x" }),
            ),
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        *shared
            .per_kind
            .lock()
            .unwrap()
            .entry(action.to_string())
            .or_default() += 1;
        let sent_at = Instant::now();
        let outcome = match call(&mut ws, next_id(), action, payload, cfg.timeout).await {
            Ok(o) => o,
            Err(e) => {
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let micros = sent_at.elapsed().as_micros().max(1) as u64;
        match outcome {
            Outcome::Answer(a) => {
                shared.answered.fetch_add(1, Ordering::Relaxed);
                if let Some(h) = shared.latency.lock().unwrap().as_mut() {
                    let _ = h.record(micros);
                }
                if action == "StartTransaction" {
                    open_tx = a["transactionId"].as_i64();
                }
            }
            Outcome::Error(code) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                *shared.error_codes.lock().unwrap().entry(code).or_default() += 1;
            }
            Outcome::Timeout => {
                shared.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_picks_by_weight() {
        let mix = Mix::parse("heartbeat=3, meter=1").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let heartbeats = (0..4000)
            .filter(|_| mix.pick(&mut rng) == Kind::Heartbeat)
            .count();
        assert!((2800..3200).contains(&heartbeats), "{heartbeats}");
        assert!(Mix::parse("teleport=1").is_err());
        assert!(Mix::parse("heartbeat=0").is_err());
    }
}
