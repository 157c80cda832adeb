//! A benchmark load connection: one charger that boots, starts a
//! transaction, then sends MeterValues as a three-phase AC charger does:
//! 8 sampled values in one meterValue entry (energy register, power, and
//! current and voltage on each phase), `context` `Sample.Periodic`, the
//! transaction's id, connector 1.
//!
//! Every reading is new: the register only goes up and the timestamp
//! (milliseconds, UTC) advances by at least 1 ms per message, so a server
//! that deduplicates identical readings stores every one of them. The frame
//! is written with `format!` rather than a JSON tree: against the trivial
//! server the generator is the bottleneck, and it should spend its time on
//! the wire, not on building values.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::charger::connection::{self, Ws};
use crate::load::{call, call_text, latency_histogram, Latency, Outcome};
use crate::Endpoint;
use ocpp_j::time::format_ms;

/// Sampled values in every MeterValues the benchmark sends.
pub const SAMPLED_VALUES_PER_MESSAGE: u64 = 8;

/// OCPP frames the load generator sent and received (CALLs out, answers in),
/// to compare with what the server's message log kept.
#[derive(Debug, Default)]
pub struct Frames {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

impl Frames {
    /// Counts one CALL and, when it was answered in time, its answer.
    pub fn count(&self, outcome: &Outcome) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if !matches!(outcome, Outcome::Timeout) {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn exchanged(&self) -> u64 {
        self.sent.load(Ordering::Relaxed) + self.received.load(Ordering::Relaxed)
    }
}

/// One connection's readings: a register that only goes up, timestamps that
/// advance, and the message ids of its frames.
struct Readings {
    charger_id: String,
    messages: u64,
    transaction_id: i64,
    register_wh: u64,
    last_ms: i64,
    rng: ChaCha8Rng,
}

/// What became of the MeterValues of one phase (or one open-loop step).
pub struct Tally {
    pub sent: AtomicU64,
    /// CALLRESULTs: MeterValues the server acknowledged.
    pub answered: AtomicU64,
    /// CALLERRORs.
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Connections lost.
    pub disconnects: AtomicU64,
    /// Open loop: scheduled before the step ended but never sent, because the
    /// connection was still waiting for earlier answers when time ran out.
    pub unsent: AtomicU64,
    pub error_codes: Mutex<BTreeMap<String, u64>>,
    /// Latency of every answer (CALLRESULT or CALLERROR), in microseconds.
    latency: Mutex<Histogram<u64>>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            error_codes: Mutex::default(),
            latency: Mutex::new(latency_histogram()),
        }
    }
}

impl Tally {
    /// Counts one CALL's outcome; `latency` is how long its answer took.
    pub fn record(&self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Answer(_) => {
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error(code) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self
                    .error_codes
                    .lock()
                    .unwrap()
                    .entry(code.clone())
                    .or_default() += 1;
            }
            Outcome::Timeout => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.record_latency(latency);
    }

    /// Records a latency without an answer (a lower bound for one never sent).
    pub fn record_latency(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).max(1);
        let _ = self.latency.lock().unwrap().record(micros);
    }

    pub fn latency(&self) -> Latency {
        Latency::of(&self.latency.lock().unwrap())
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct MeterConn {
    ws: Ws,
    readings: Readings,
}

impl MeterConn {
    /// Connects (from the source address of `index`, round-robin), boots and
    /// starts a transaction. The idTag belongs to nobody: the answer still
    /// carries a transactionId, which is all the load needs.
    pub async fn open(
        endpoint: &Endpoint,
        charger_id: String,
        index: usize,
        timeout: Duration,
        frames: &Frames,
    ) -> anyhow::Result<MeterConn> {
        let source = (!endpoint.source_addrs.is_empty())
            .then(|| endpoint.source_addrs[index % endpoint.source_addrs.len()]);
        let mut ws = connection::connect(endpoint, &charger_id, None, source, timeout).await?;
        let mut rng = ChaCha8Rng::seed_from_u64(index as u64);
        let register_wh = rng.random_range(1_000..1_000_000u64);
        let boot = json!({"chargePointVendor": "csms-sim", "chargePointModel": "Bench AC 3-phase"});
        let outcome = call(
            &mut ws,
            format!("{charger_id}-boot"),
            "BootNotification",
            boot,
            timeout,
        )
        .await?;
        frames.count(&outcome);
        match outcome {
            Outcome::Answer(a) if a["status"] == "Accepted" => {}
            Outcome::Answer(a) => bail!("{charger_id}: boot answered {a}"),
            Outcome::Error(code) => bail!("{charger_id}: boot answered CALLERROR {code}"),
            Outcome::Timeout => bail!("{charger_id}: boot not answered in time"),
        }
        let now = Utc::now();
        let start = json!({"connectorId": 1, "idTag": format!("BENCH-{}", index + 1),
                           "meterStart": register_wh, "timestamp": format_ms(now)});
        let outcome = call(
            &mut ws,
            format!("{charger_id}-start"),
            "StartTransaction",
            start,
            timeout,
        )
        .await?;
        frames.count(&outcome);
        let transaction_id = match outcome {
            Outcome::Answer(a) => a["transactionId"]
                .as_i64()
                .with_context(|| format!("{charger_id}: StartTransaction answered {a}"))?,
            Outcome::Error(code) => {
                bail!("{charger_id}: StartTransaction answered CALLERROR {code}")
            }
            Outcome::Timeout => bail!("{charger_id}: StartTransaction not answered in time"),
        };
        Ok(MeterConn {
            ws,
            readings: Readings {
                charger_id,
                messages: 0,
                transaction_id,
                register_wh,
                last_ms: now.timestamp_millis(),
                rng,
            },
        })
    }

    /// Opens `count` connections `{prefix}{n:05}`, `concurrency` at a time.
    /// Returns those that opened and the number that failed (the first
    /// failure's reason is logged).
    pub async fn open_many(
        endpoint: &Endpoint,
        prefix: &str,
        count: usize,
        concurrency: usize,
        timeout: Duration,
        frames: &Arc<Frames>,
    ) -> (Vec<MeterConn>, usize) {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = Vec::with_capacity(count);
        for index in 0..count {
            let (endpoint, frames, permits) = (endpoint.clone(), frames.clone(), permits.clone());
            let id = format!("{prefix}{:05}", index + 1);
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                MeterConn::open(&endpoint, id, index, timeout, &frames).await
            }));
        }
        let mut conns = Vec::with_capacity(count);
        let mut failed = 0;
        for task in tasks {
            match task.await {
                Ok(Ok(conn)) => conns.push(conn),
                Ok(Err(e)) => {
                    if failed == 0 {
                        tracing::warn!("a load connection did not open: {e:#}");
                    }
                    failed += 1;
                }
                Err(e) => {
                    tracing::warn!("a load connection task failed: {e}");
                    failed += 1;
                }
            }
        }
        (conns, failed)
    }

    /// Sends the next MeterValues and waits for its answer (or `timeout`).
    /// An error means the connection is gone.
    pub async fn send_meter_values(
        &mut self,
        timeout: Duration,
        frames: &Frames,
    ) -> anyhow::Result<Outcome> {
        let (id, frame) = self.readings.next_meter_values();
        let outcome = call_text(&mut self.ws, &id, frame, timeout).await?;
        frames.count(&outcome);
        Ok(outcome)
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.flush()).await;
    }
}

impl Readings {
    /// The next MeterValues: its message id and the frame.
    fn next_meter_values(&mut self) -> (String, String) {
        self.messages += 1;
        let id = format!("{}-{}", self.charger_id, self.messages);
        let ms = Utc::now().timestamp_millis().max(self.last_ms + 1);
        self.last_ms = ms;
        let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_else(Utc::now);
        self.register_wh += self.rng.random_range(1..8u64);
        let r = &mut self.rng;
        let power_w = r.random_range(10_800..11_200u32);
        let amps = |r: &mut ChaCha8Rng| f64::from(power_w) / 690.0 + r.random_range(-0.3..0.3);
        let (i1, i2, i3) = (amps(r), amps(r), amps(r));
        let volts = |r: &mut ChaCha8Rng| 230.0 + r.random_range(-3.0..3.0);
        let (v1, v2, v3) = (volts(r), volts(r), volts(r));
        let value = |value: String, measurand: &str, phase: Option<&str>, unit: &str| {
            let phase = phase
                .map(|p| format!(r#""phase":"{p}","#))
                .unwrap_or_default();
            format!(
                r#"{{"value":"{value}","context":"Sample.Periodic","measurand":"{measurand}",{phase}"location":"Outlet","unit":"{unit}"}}"#
            )
        };
        let sampled = [
            value(
                self.register_wh.to_string(),
                "Energy.Active.Import.Register",
                None,
                "Wh",
            ),
            value(power_w.to_string(), "Power.Active.Import", None, "W"),
            value(format!("{i1:.1}"), "Current.Import", Some("L1"), "A"),
            value(format!("{i2:.1}"), "Current.Import", Some("L2"), "A"),
            value(format!("{i3:.1}"), "Current.Import", Some("L3"), "A"),
            value(format!("{v1:.1}"), "Voltage", Some("L1-N"), "V"),
            value(format!("{v2:.1}"), "Voltage", Some("L2-N"), "V"),
            value(format!("{v3:.1}"), "Voltage", Some("L3-N"), "V"),
        ]
        .join(",");
        let frame = format!(
            r#"[2,"{id}","MeterValues",{{"connectorId":1,"transactionId":{},"meterValue":[{{"timestamp":"{}","sampledValue":[{sampled}]}}]}}]"#,
            self.transaction_id,
            format_ms(at)
        );
        (id, frame)
    }
}

/// Closes every connection.
pub async fn close_all(conns: Vec<MeterConn>) {
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        tasks.push(tokio::spawn(conn.close()));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn readings() -> Readings {
        Readings {
            charger_id: "CP".into(),
            messages: 0,
            transaction_id: 42,
            register_wh: 1000,
            // Ahead of the clock: timestamps must still advance.
            last_ms: Utc::now().timestamp_millis() + 10_000,
            rng: ChaCha8Rng::seed_from_u64(1),
        }
    }

    fn register(frame: &Value) -> u64 {
        frame[3]["meterValue"][0]["sampledValue"][0]["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn sampled_at(frame: &Value) -> DateTime<Utc> {
        ocpp_j::time::parse_charger_time(frame[3]["meterValue"][0]["timestamp"].as_str().unwrap())
            .unwrap()
            .at
    }

    #[test]
    fn a_meter_values_frame_carries_eight_distinct_fresh_readings() {
        let mut r = readings();
        let (id1, first) = r.next_meter_values();
        let (id2, second) = r.next_meter_values();
        assert_ne!(id1, id2);
        let first: Value = serde_json::from_str(&first).unwrap();
        let second: Value = serde_json::from_str(&second).unwrap();
        assert_eq!(
            (&first[0], &first[1], &first[2]),
            (&json!(2), &json!(id1), &json!("MeterValues"))
        );
        let payload = &first[3];
        assert_eq!(payload["connectorId"], 1);
        assert_eq!(payload["transactionId"], 42);
        let entries = payload["meterValue"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        let sampled = entries[0]["sampledValue"].as_array().unwrap();
        assert_eq!(sampled.len() as u64, SAMPLED_VALUES_PER_MESSAGE);
        let mut kinds: Vec<String> = sampled
            .iter()
            .map(|s| format!("{} {} {}", s["measurand"], s["phase"], s["unit"]))
            .collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 8, "{kinds:?}");
        assert!(sampled.iter().all(|s| s["context"] == "Sample.Periodic"));
        assert_eq!(sampled[0]["measurand"], "Energy.Active.Import.Register");
        assert!(register(&second) > register(&first));
        assert!(sampled_at(&second) > sampled_at(&first));
        assert!(entries[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
