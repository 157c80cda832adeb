//! Fleets: many chargers on one Tokio runtime, each driven by simulated
//! drivers who arrive at random, charge for a random time and leave.
//!
//! Every charger is two small tasks (the charger and its driver). Connections
//! are spread over a ramp-up period and, with several source addresses, over
//! several loopback addresses so one client can open more connections than the
//! ephemeral ports of a single address allow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::charger::{spawn, ChargerConfig, ChargerHandle, Command};
use crate::clock::SimClock;
use crate::scenario::random_vehicle;
use crate::summary::{Recorder, Summary};
use crate::vehicle::{ChargerModel, Vehicle};
use crate::Endpoint;

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub endpoint: Endpoint,
    pub chargers: usize,
    /// Charger ids are `{id_prefix}{n:05}`, n from 1.
    pub id_prefix: String,
    /// HTTP Basic password shared by every charger (user = charger id).
    pub password: Option<String>,
    /// Hardware of every charger, including its number of connectors.
    pub model: ChargerModel,
    pub speed: f64,
    pub seed: u64,
    /// How long (real time) drivers keep arriving.
    pub run_for: Duration,
    /// Real time over which the chargers connect, evenly spread.
    pub ramp_up: Duration,
    /// Chance that a driver arrives at an idle connector in a simulated minute.
    pub session_probability: f64,
    /// Range of simulated charging time in minutes.
    pub session_minutes: (f64, f64),
    /// idTags drivers present; empty: `TAG-{n:05}-{connector}` (n as in the
    /// charger id), which fits OCPP's 20-character idToken.
    pub id_tags: Vec<String>,
    /// Stop starting sessions after this many.
    pub max_sessions: Option<u64>,
    /// At the end, stop running sessions (reason `Other`) so every session
    /// has a meterStop; otherwise they are left running on the server.
    pub stop_sessions_at_end: bool,
    pub meter_interval_s: u64,
    pub heartbeat_interval_s: u64,
    pub call_timeout: Duration,
    /// Simulated start time; `None` is now.
    pub start_time: Option<DateTime<Utc>>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            endpoint: Endpoint::default(),
            chargers: 10,
            id_prefix: "SIM-".into(),
            password: None,
            model: ChargerModel::default(),
            speed: 1.0,
            seed: 1,
            run_for: Duration::from_secs(60),
            ramp_up: Duration::from_secs(1),
            session_probability: 0.1,
            session_minutes: (20.0, 60.0),
            id_tags: Vec::new(),
            max_sessions: None,
            stop_sessions_at_end: true,
            meter_interval_s: 60,
            heartbeat_interval_s: 300,
            call_timeout: Duration::from_secs(30),
            start_time: None,
            progress: false,
        }
    }
}

impl FleetConfig {
    pub fn charger_id(&self, index: usize) -> String {
        format!("{}{:05}", self.id_prefix, index + 1)
    }
}

/// A different, reproducible seed per charger.
fn seed_for(seed: u64, index: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Runs a fleet to the end and returns its summary.
pub async fn run(cfg: FleetConfig) -> anyhow::Result<Summary> {
    run_with(cfg, Arc::new(Recorder::default())).await
}

/// Runs a fleet reporting into `recorder`, so a caller can watch its live counters.
pub async fn run_with(cfg: FleetConfig, recorder: Arc<Recorder>) -> anyhow::Result<Summary> {
    anyhow::ensure!(cfg.chargers > 0, "a fleet needs at least one charger");
    anyhow::ensure!(
        cfg.model.connectors > 0,
        "chargers need at least one connector"
    );
    anyhow::ensure!(cfg.speed > 0.0, "speed must be positive");
    let started = Instant::now();
    let clock = SimClock::new(cfg.start_time.unwrap_or_else(Utc::now), cfg.speed);
    let end = started + cfg.run_for;
    let cfg = Arc::new(cfg);
    let endpoint = Arc::new(cfg.endpoint.clone());
    let budget = Arc::new(AtomicU64::new(0));
    let progress = cfg
        .progress
        .then(|| tokio::spawn(progress_line(recorder.clone())));

    let mut drivers = Vec::with_capacity(cfg.chargers);
    for i in 0..cfg.chargers {
        let offset = cfg.ramp_up.mul_f64(i as f64 / cfg.chargers as f64);
        let mut cc = ChargerConfig::new(cfg.charger_id(i));
        cc.password = cfg.password.clone();
        cc.model = cfg.model;
        cc.clock = clock;
        cc.seed = seed_for(cfg.seed, i);
        cc.meter_interval_s = cfg.meter_interval_s;
        cc.heartbeat_interval_s = cfg.heartbeat_interval_s;
        cc.call_timeout = cfg.call_timeout;
        cc.initial_register_wh = ChaCha8Rng::seed_from_u64(cc.seed).random_range(0..5_000_000);
        if !cfg.endpoint.source_addrs.is_empty() {
            cc.source_addr = Some(cfg.endpoint.source_addrs[i % cfg.endpoint.source_addrs.len()]);
        }
        let (endpoint, recorder, cfg, budget) = (
            endpoint.clone(),
            recorder.clone(),
            cfg.clone(),
            budget.clone(),
        );
        drivers.push(tokio::spawn(async move {
            tokio::time::sleep_until(started + offset).await;
            let h = spawn(cc, endpoint, recorder);
            drive(h, i, cfg, clock, end, budget).await;
        }));
    }
    for d in drivers {
        d.await?;
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    Ok(recorder.summary(started.elapsed().as_secs_f64()))
}

/// One charger's drivers: each simulated minute, an idle connector gets a
/// driver with the configured probability; a driver charging past their time
/// presents their card again and unplugs.
async fn drive(
    mut h: ChargerHandle,
    index: usize,
    cfg: Arc<FleetConfig>,
    clock: SimClock,
    end: Instant,
    budget: Arc<AtomicU64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed_for(cfg.seed, index) ^ 0xD21E);
    let connectors = cfg.model.connectors as usize;
    // When each connector's driver leaves, and with which card.
    let mut leaving: Vec<Option<(DateTime<Utc>, String)>> = vec![None; connectors];
    let minute = clock
        .real(Duration::from_secs(60))
        .max(Duration::from_millis(10));
    // Spread the drivers' minutes so the fleet does not act in lockstep.
    tokio::time::sleep(minute.mul_f64(rng.random_range(0.0..1.0))).await;
    let remaining = end.saturating_duration_since(Instant::now());
    let _ = h.wait_for(remaining, "registered", |v| v.accepted).await;
    while Instant::now() < end {
        let view = h.view();
        let now = clock.now();
        for (c, leave) in leaving.iter_mut().enumerate() {
            let connector = c as u32 + 1;
            let Some(cv) = view.connector(connector) else {
                continue;
            };
            match leave {
                Some((at, tag)) if now >= *at => {
                    let _ = h
                        .send(Command::PresentIdTag {
                            connector,
                            id_tag: tag.clone(),
                        })
                        .await;
                    let _ = h.send(Command::Unplug { connector }).await;
                    *leave = None;
                }
                Some(_) => {}
                None => {
                    let free = cv.status == "Available" && !cv.plugged && !cv.in_transaction;
                    if !free || !view.accepted || rng.random::<f64>() >= cfg.session_probability {
                        continue;
                    }
                    if let Some(max) = cfg.max_sessions {
                        if budget.fetch_add(1, Ordering::Relaxed) >= max {
                            continue;
                        }
                    }
                    let tag = if cfg.id_tags.is_empty() {
                        format!("TAG-{:05}-{connector}", index + 1)
                    } else {
                        cfg.id_tags[rng.random_range(0..cfg.id_tags.len())].clone()
                    };
                    let (lo, hi) = cfg.session_minutes;
                    let minutes = if hi > lo {
                        rng.random_range(lo..hi)
                    } else {
                        lo
                    };
                    let vehicle = random_vehicle(&mut rng);
                    let vehicle = Vehicle::new(vehicle.model, vehicle.soc);
                    let _ = h
                        .send(Command::PresentIdTag {
                            connector,
                            id_tag: tag.clone(),
                        })
                        .await;
                    let _ = h.send(Command::PlugIn { connector, vehicle }).await;
                    *leave = Some((
                        now + chrono::Duration::milliseconds((minutes * 60_000.0) as i64),
                        tag,
                    ));
                }
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(minute.min(left)).await;
    }
    h.shutdown(cfg.stop_sessions_at_end).await;
}

async fn progress_line(recorder: Arc<Recorder>) {
    let mut previous = recorder.stats.snapshot();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = recorder.stats.snapshot();
        eprint!("\r\x1b[2K{}", now.progress_line(&previous, 1.0));
        previous = now;
    }
}
