//! Idle chargers by the thousand: each connects, boots, and heartbeats at the
//! interval the server gave it; when its connection is lost it reconnects
//! with jittered exponential backoff, as real chargers do, and boots again.
//!
//! This is what the memory, shutdown and reconnect-storm phases stand on.
//! Each charger is one small task with a 4 KiB read buffer and no physics
//! (the fleet's chargers carry meters, sessions and an outbox: too much
//! weight for 19,000 of them beside a server on the same machine). The
//! first connections go through a semaphore so the ramp-up is as fast as
//! the server accepts without a storm; reconnects after a restart do not,
//! because that storm is what the restart phase measures.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::meter::Frames;
use crate::charger::connection::{self, Ws};
use crate::charger::{jittered, next_backoff};
use crate::load::{call, latency_histogram, Latency, Outcome};
use crate::Endpoint;
use ocpp_j::frame::{self, Call, Frame};
use ocpp_j::{CallError, ErrorCode};

#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub endpoint: Endpoint,
    pub chargers: usize,
    pub id_prefix: String,
    /// First connections (and boots) in flight at once.
    pub ramp_concurrency: usize,
    /// Reconnect backoff: starts here, doubles up to 30 s, ±50 % jitter.
    pub reconnect_backoff: Duration,
    pub timeout: Duration,
}

/// Live counters of the fleet.
pub struct Counters {
    /// Connected now.
    pub connected: AtomicU64,
    /// Connected and Accepted now.
    pub accepted: AtomicU64,
    pub boots: AtomicU64,
    pub boot_errors: AtomicU64,
    pub connect_failures: AtomicU64,
    pub heartbeats_sent: AtomicU64,
    pub heartbeats_answered: AtomicU64,
    pub heartbeat_errors: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    /// BootNotification round trips since the last [`IdleFleet::take_boot_latency`].
    boot_latency: Mutex<Histogram<u64>>,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

pub struct IdleFleet {
    pub counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl IdleFleet {
    /// Starts every charger; they connect `ramp_concurrency` at a time.
    pub fn start(cfg: &IdleConfig, frames: &Arc<Frames>) -> IdleFleet {
        let counters = Arc::new(Counters {
            connected: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            boots: AtomicU64::new(0),
            boot_errors: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            heartbeats_sent: AtomicU64::new(0),
            heartbeats_answered: AtomicU64::new(0),
            heartbeat_errors: AtomicU64::new(0),
            heartbeat_timeouts: AtomicU64::new(0),
            boot_latency: Mutex::new(latency_histogram()),
        });
        let (stop, stopped) = watch::channel(false);
        let ramp = Arc::new(Semaphore::new(cfg.ramp_concurrency.max(1)));
        let shared = Arc::new(cfg.clone());
        let tasks = (0..cfg.chargers)
            .map(|index| {
                let charger = Charger {
                    id: format!("{}{:05}", cfg.id_prefix, index + 1),
                    source: (!cfg.endpoint.source_addrs.is_empty()).then(|| {
                        cfg.endpoint.source_addrs[index % cfg.endpoint.source_addrs.len()]
                    }),
                    cfg: shared.clone(),
                    counters: counters.clone(),
                    frames: frames.clone(),
                    stopped: stopped.clone(),
                    rng: ChaCha8Rng::seed_from_u64(index as u64),
                    messages: 0,
                };
                tokio::spawn(charger.run(ramp.clone()))
            })
            .collect();
        IdleFleet {
            counters,
            stop,
            tasks,
        }
    }

    /// Polls every 10 ms until `done` holds or `limit` passes; true if it held.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&Counters) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.counters) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The BootNotification latencies recorded so far; starts a new record.
    pub fn take_boot_latency(&self) -> Latency {
        let mut h = self.counters.boot_latency.lock().unwrap();
        let latency = Latency::of(&h);
        h.reset();
        latency
    }

    /// Closes every connection and waits for the chargers to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct Charger {
    id: String,
    source: Option<IpAddr>,
    cfg: Arc<IdleConfig>,
    counters: Arc<Counters>,
    frames: Arc<Frames>,
    stopped: watch::Receiver<bool>,
    rng: ChaCha8Rng,
    messages: u64,
}

/// Why a charger's connection ended.
enum Ended {
    Stopped,
    Lost,
}

impl Charger {
    async fn run(mut self, ramp: Arc<Semaphore>) {
        let mut ramp = Some(ramp);
        let mut backoff = Duration::ZERO;
        loop {
            // Only the first connection waits for a ramp-up slot.
            let permit = match ramp.take() {
                Some(ramp) => ramp.acquire_owned().await.ok(),
                None => None,
            };
            let ended = match self.connect_and_boot().await {
                Ok(Some((ws, interval))) => {
                    drop(permit);
                    backoff = Duration::ZERO;
                    self.idle(ws, interval).await
                }
                Ok(None) => Ended::Lost,
                Err(()) => Ended::Stopped,
            };
            if matches!(ended, Ended::Stopped) {
                return;
            }
            backoff = next_backoff(backoff, self.cfg.reconnect_backoff);
            let wait = jittered(backoff, &mut self.rng);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stopped.changed() => return,
            }
        }
    }

    /// Connects and boots: the socket and the heartbeat interval once
    /// Accepted, `None` when it failed, `Err` when the fleet is stopping.
    async fn connect_and_boot(&mut self) -> Result<Option<(Ws, Duration)>, ()> {
        let counters = self.counters.clone();
        let connect = connection::connect(
            &self.cfg.endpoint,
            &self.id,
            None,
            self.source,
            self.cfg.timeout,
        );
        let mut ws = tokio::select! {
            ws = connect => match ws {
                Ok(ws) => ws,
                Err(e) => {
                    tracing::debug!(charger = %self.id, "connect failed: {e:#}");
                    counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
            },
            _ = self.stopped.changed() => return Err(()),
        };
        counters.connected.fetch_add(1, Ordering::Relaxed);
        let boot = json!({"chargePointVendor": "csms-sim", "chargePointModel": "Bench idle"});
        let sent = Instant::now();
        let id = self.next_id();
        let outcome = call(&mut ws, id, "BootNotification", boot, self.cfg.timeout).await;
        counters.boots.fetch_add(1, Ordering::Relaxed);
        let interval = match &outcome {
            Ok(o) => {
                self.frames.count(o);
                match o {
                    Outcome::Answer(a) if a["status"] == "Accepted" => a["interval"].as_u64(),
                    _ => None,
                }
            }
            Err(_) => None,
        };
        let Some(interval) = interval else {
            if outcome.is_ok() {
                counters.boot_errors.fetch_add(1, Ordering::Relaxed);
            }
            counters.connected.fetch_sub(1, Ordering::Relaxed);
            let _ = ws.close(None).await;
            return Ok(None);
        };
        let micros = (sent.elapsed().as_micros() as u64).max(1);
        let _ = counters.boot_latency.lock().unwrap().record(micros);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Some((ws, Duration::from_secs(interval.max(1)))))
    }

    /// Heartbeats until the connection is lost or the fleet stops.
    async fn idle(&mut self, mut ws: Ws, interval: Duration) -> Ended {
        let counters = self.counters.clone();
        // The first heartbeat at a random point of the first interval, so
        // thousands of chargers booted together do not beat together.
        let mut next = Instant::now() + interval.mul_f64(self.rng.random_range(0.0..1.0));
        let ended = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    next += interval;
                    counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                    let id = self.next_id();
                    match call(&mut ws, id, "Heartbeat", json!({}), self.cfg.timeout).await {
                        Ok(outcome) => {
                            self.frames.count(&outcome);
                            let counter = match outcome {
                                Outcome::Answer(_) => &counters.heartbeats_answered,
                                Outcome::Error(_) => &counters.heartbeat_errors,
                                Outcome::Timeout => &counters.heartbeat_timeouts,
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break Ended::Lost,
                    }
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        // No server commands are expected; answer any honestly.
                        if let Ok(Frame::Call(Call { id, .. })) = frame::parse(&text) {
                            let answer = CallError::new(ErrorCode::NotSupported, "bench charger");
                            if ws.send(Message::text(frame::encode_error(&id, &answer))).await.is_err() {
                                break Ended::Lost;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Ended::Lost,
                    Some(Ok(_)) => {}
                },
                _ = self.stopped.changed() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    break Ended::Stopped;
                }
            }
        };
        counters.accepted.fetch_sub(1, Ordering::Relaxed);
        counters.connected.fetch_sub(1, Ordering::Relaxed);
        ended
    }

    fn next_id(&mut self) -> String {
        self.messages += 1;
        format!("{}-{}", self.id, self.messages)
    }
}
