//! `csms-sim bench`: measures the csms server and a trivial server side by
//! side, with the same load generator on the same machine, in one run.
//!
//! The trivial server ([`trivial`]) answers every CALL with a fixed reply
//! and stores nothing: what the machine, the WebSocket stack and this load
//! generator can do. The csms server runs as a child process on a fresh
//! database (SQLite, or a PostgreSQL database made for the run). Each
//! server goes through the same phases, one server at a time so they never
//! compete for the cores:
//!
//! 1. **memory** ([`idle`]): N idle chargers connect, boot and heartbeat;
//!    the server's resident memory per charger;
//! 2. **restart**: SIGTERM with the N connected (shutdown time), then the
//!    server starts again on the same database and all N reconnect with
//!    jittered backoff and boot again (time from `/health` until all are
//!    Accepted, BootNotification latency);
//! 3. **closed** ([`closed`]): C connections sending MeterValues back to
//!    back for D seconds: throughput and latency;
//! 4. **open** ([`open`]): MeterValues on a schedule at stepped rates,
//!    latency from the scheduled send time: the knee (highest rate with p99
//!    under 50 ms and nothing failing).
//!
//! Against csms, every load phase also compares what the server
//! acknowledged (MeterValues answered × 8 sampled values, [`meter`]) with
//! what it stored, and the frames exchanged with its message log, through
//! `GET /api/admin/ingest` ([`api`]). Every phase is bounded in time.

pub mod api;
mod closed;
mod database;
mod idle;
mod meter;
pub mod open;
pub mod report;
mod target;
pub mod trivial;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use self::api::IngestCounts;
use self::database::Database;
use self::idle::{Counters, IdleConfig, IdleFleet};
use self::meter::{close_all, Frames, MeterConn, SAMPLED_VALUES_PER_MESSAGE};
use self::open::KneeConfig;
use self::report::{
    BenchReport, Ingest, IngestCheck, Memory, Restart, ServerReport, Settings, Shutdown,
};
pub use self::target::ServerKind;
use self::target::{free_port, Target};
use crate::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Memory,
    Restart,
    Closed,
    Open,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Memory, Phase::Restart, Phase::Closed, Phase::Open];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Memory => "memory",
            Phase::Restart => "restart",
            Phase::Closed => "closed",
            Phase::Open => "open",
        }
    }

    /// `closed,open,memory,restart` (`shutdown` is part of `restart`).
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Phase>> {
        let mut phases = Vec::new();
        for name in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let phase = match name {
                "memory" => Phase::Memory,
                "restart" | "shutdown" => Phase::Restart,
                "closed" => Phase::Closed,
                "open" => Phase::Open,
                other => bail!("unknown phase {other} (closed, open, memory, restart)"),
            };
            if !phases.contains(&phase) {
                phases.push(phase);
            }
        }
        anyhow::ensure!(!phases.is_empty(), "no phase selected");
        Ok(phases)
    }
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The csms binary.
    pub server_bin: PathBuf,
    /// This binary, which serves `trivial-server`.
    pub sim_bin: PathBuf,
    /// A PostgreSQL URL the bench may create and drop databases with; SQLite when None.
    pub postgres: Option<String>,
    pub servers: Vec<ServerKind>,
    pub phases: Vec<Phase>,
    pub closed_connections: usize,
    pub duration: Duration,
    pub open_connections: usize,
    pub knee: KneeConfig,
    pub chargers: usize,
    /// The interval the servers give chargers in their boot answers.
    pub heartbeat_interval: Duration,
    pub reconnect_backoff: Duration,
    pub source_addrs: Vec<IpAddr>,
    /// How long one CALL may wait for its answer.
    pub timeout: Duration,
    /// How long all chargers may take to be back after a restart.
    pub restart_limit: Duration,
    /// How long a server may take to exit after SIGTERM before it is killed.
    pub shutdown_limit: Duration,
    /// Keep the servers' logs here (a temporary directory otherwise).
    pub log_dir: Option<PathBuf>,
    pub quick: bool,
}

impl BenchConfig {
    /// The full-size run: 200 closed-loop connections for 20 s, 400 open-loop
    /// connections from 500 msg/s up, 19,000 idle chargers.
    pub fn full(server_bin: PathBuf, sim_bin: PathBuf) -> BenchConfig {
        BenchConfig {
            server_bin,
            sim_bin,
            postgres: None,
            servers: vec![ServerKind::Trivial, ServerKind::Csms],
            phases: Phase::ALL.to_vec(),
            closed_connections: 200,
            duration: Duration::from_secs(20),
            open_connections: 400,
            knee: KneeConfig {
                start_rate: 500.0,
                max_rate: 128_000.0,
                min_rate: 50.0,
                refine: 3,
                step: Duration::from_secs(5),
                drain: Duration::from_secs(5),
                pause: Duration::from_secs(1),
                p99_limit_ms: 50.0,
                timeout: Duration::from_secs(10),
            },
            chargers: 19_000,
            heartbeat_interval: Duration::from_secs(30),
            reconnect_backoff: Duration::from_secs(1),
            source_addrs: crate::charger::connection::parse_source_addrs("127.0.0.1-127.0.0.8")
                .expect("a valid range"),
            timeout: Duration::from_secs(10),
            restart_limit: Duration::from_secs(120),
            shutdown_limit: Duration::from_secs(60),
            log_dir: None,
            quick: false,
        }
    }

    /// A run of a few seconds per server, for CI: small numbers, every phase.
    pub fn quick(server_bin: PathBuf, sim_bin: PathBuf) -> BenchConfig {
        let full = BenchConfig::full(server_bin, sim_bin);
        BenchConfig {
            closed_connections: 20,
            duration: Duration::from_secs(2),
            open_connections: 20,
            knee: KneeConfig {
                start_rate: 100.0,
                max_rate: 200.0,
                min_rate: 25.0,
                refine: 0,
                step: Duration::from_secs(1),
                drain: Duration::from_secs(2),
                pause: Duration::from_millis(200),
                ..full.knee
            },
            chargers: 200,
            heartbeat_interval: Duration::from_secs(1),
            reconnect_backoff: Duration::from_millis(200),
            restart_limit: Duration::from_secs(60),
            quick: true,
            ..full
        }
    }

    fn has(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// Open files this process needs at most at once.
    fn open_files_needed(&self) -> usize {
        let chargers = if self.has(Phase::Memory) || self.has(Phase::Restart) {
            self.chargers
        } else {
            0
        };
        chargers
            .max(self.closed_connections)
            .max(self.open_connections)
            + 100
    }
}

/// Raises this process's open-files limit to its hard limit (servers started
/// from here inherit it) and returns it.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Runs every selected phase against every selected server.
pub async fn run(cfg: &BenchConfig) -> anyhow::Result<BenchReport> {
    let open_files = raise_open_files_limit();
    let needed = cfg.open_files_needed();
    if needed as u64 > open_files {
        bail!(
            "this run needs about {needed} open files (--chargers {} and the load connections) \
             but a process may open {open_files} here (ulimit -n); lower --chargers",
            cfg.chargers
        );
    }
    if cfg.servers.contains(&ServerKind::Csms) && !cfg.server_bin.is_file() {
        bail!(
            "no csms binary at {}: build it (cargo build --release --workspace) or pass --server-bin",
            cfg.server_bin.display()
        );
    }
    let temp_logs;
    let log_dir = match &cfg.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp_logs = tempfile::Builder::new()
                .prefix("csms-bench-logs-")
                .tempdir()?;
            temp_logs.path().to_path_buf()
        }
    };
    let mut report = BenchReport {
        settings: settings(cfg, open_files),
        csms: None,
        trivial: None,
    };
    // The reference first: it also warms up the load generator.
    for kind in [ServerKind::Trivial, ServerKind::Csms] {
        if !cfg.servers.contains(&kind) {
            continue;
        }
        tracing::info!(server = kind.name(), "measuring");
        let server = run_server(kind, cfg, &log_dir).await?;
        match kind {
            ServerKind::Csms => report.csms = Some(server),
            ServerKind::Trivial => report.trivial = Some(server),
        }
    }
    Ok(report)
}

fn settings(cfg: &BenchConfig, open_files: u64) -> Settings {
    Settings {
        quick: cfg.quick,
        phases: cfg.phases.iter().map(|p| p.name().to_string()).collect(),
        database: if cfg.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
        .into(),
        closed_connections: cfg.closed_connections,
        closed_duration_s: cfg.duration.as_secs_f64(),
        open_connections: cfg.open_connections,
        open_step_s: cfg.knee.step.as_secs_f64(),
        open_start_rate: cfg.knee.start_rate,
        open_max_rate: cfg.knee.max_rate,
        open_refine_steps: cfg.knee.refine,
        p99_limit_ms: cfg.knee.p99_limit_ms,
        chargers: cfg.chargers,
        heartbeat_interval_s: cfg.heartbeat_interval.as_secs(),
        call_timeout_s: cfg.timeout.as_secs_f64(),
        source_addrs: cfg.source_addrs.len(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        open_files_limit: open_files,
    }
}

/// One server through every phase; the server is stopped and its database
/// removed whatever happens.
async fn run_server(
    kind: ServerKind,
    cfg: &BenchConfig,
    log_dir: &Path,
) -> anyhow::Result<ServerReport> {
    let database = match kind {
        ServerKind::Csms => Some(Database::fresh(cfg.postgres.as_deref()).await?),
        ServerKind::Trivial => None,
    };
    let port = free_port()?;
    let log = log_dir.join(format!("{}.log", kind.name()));
    let mut target = match (&database, kind) {
        (Some(db), ServerKind::Csms) => {
            let secret = format!("{:032x}", rand::random::<u128>());
            Target::csms(
                &cfg.server_bin,
                port,
                db.url(),
                &secret,
                cfg.heartbeat_interval,
                log,
            )
        }
        _ => Target::trivial(&cfg.sim_bin, port, cfg.heartbeat_interval, log),
    };
    let outcome = measure(&mut target, cfg, database.as_ref().map(Database::kind)).await;
    target.stop().await;
    if let Some(db) = database {
        if let Err(e) = db.remove().await {
            tracing::warn!("removing the benchmark database: {e:#}");
        }
    }
    outcome
}

/// How long a server may take to start and answer `/health`.
const START_LIMIT: Duration = Duration::from_secs(120);

async fn measure(
    target: &mut Target,
    cfg: &BenchConfig,
    database: Option<&str>,
) -> anyhow::Result<ServerReport> {
    let frames = Arc::new(Frames::default());
    let load_average_before = load_average();
    target.start(START_LIMIT).await?;
    let stores = target.kind == ServerKind::Csms;
    let endpoint = Endpoint {
        url: target.ws_url(),
        tls: None,
        source_addrs: cfg.source_addrs.clone(),
    };
    let mut report = ServerReport {
        server: target.kind.name().into(),
        database: database.map(str::to_string),
        load_average_before,
        ..ServerReport::default()
    };
    let counts_at_start = if stores {
        Some(target.api.ingest_counts().await?)
    } else {
        None
    };

    let mut idle_check = None;
    if cfg.has(Phase::Memory) || cfg.has(Phase::Restart) {
        let before = snapshot(target, stores, &frames).await?;
        fleet_phases(target, cfg, &endpoint, &frames, &mut report).await?;
        idle_check = check(target, stores, &frames, before, 0).await?;
    }

    let mut acknowledged = 0;
    let (mut closed_check, mut open_check) = (None, None);
    if cfg.has(Phase::Closed) {
        tracing::info!(connections = cfg.closed_connections, "closed loop");
        let before = snapshot(target, stores, &frames).await?;
        let (conns, failed) = MeterConn::open_many(
            &endpoint,
            "CLOSED-",
            cfg.closed_connections,
            100,
            cfg.timeout,
            &frames,
        )
        .await;
        let (conns, closed) = closed::run(conns, failed, cfg.duration, cfg.timeout, &frames).await;
        close_all(conns).await;
        acknowledged += closed.answered;
        closed_check = check(target, stores, &frames, before, closed.answered).await?;
        report.closed_loop = Some(closed);
    }
    if cfg.has(Phase::Open) {
        tracing::info!(connections = cfg.open_connections, "open loop");
        let before = snapshot(target, stores, &frames).await?;
        let (conns, failed) = MeterConn::open_many(
            &endpoint,
            "OPEN-",
            cfg.open_connections,
            100,
            cfg.timeout,
            &frames,
        )
        .await;
        let knee = KneeConfig {
            timeout: cfg.timeout,
            ..cfg.knee.clone()
        };
        let (conns, open) = open::find_knee(conns, failed, &knee, &frames).await;
        close_all(conns).await;
        acknowledged += open.answered;
        open_check = check(target, stores, &frames, before, open.answered).await?;
        report.open_loop = Some(open);
    }
    if let Some(counts) = counts_at_start {
        // Frames are counted from the server's start, as its log is.
        let start = Snapshot { counts, frames: 0 };
        let total = check(target, stores, &frames, Some(start), acknowledged).await?;
        report.ingest = total.map(|total| Ingest {
            idle_chargers: idle_check,
            closed_loop: closed_check,
            open_loop: open_check,
            total,
        });
    }
    Ok(report)
}

/// The idle fleet: memory per charger, then shutdown and the reconnect storm.
async fn fleet_phases(
    target: &mut Target,
    cfg: &BenchConfig,
    endpoint: &Endpoint,
    frames: &Arc<Frames>,
    report: &mut ServerReport,
) -> anyhow::Result<()> {
    let n = cfg.chargers as u64;
    let get = Counters::get;
    // Settled after start-up, before any charger.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = target.rss_kib()?;
    tracing::info!(chargers = n, "idle chargers connecting");
    let fleet = IdleFleet::start(
        &IdleConfig {
            endpoint: endpoint.clone(),
            chargers: cfg.chargers,
            id_prefix: "IDLE-".into(),
            ramp_concurrency: 200,
            reconnect_backoff: cfg.reconnect_backoff,
            timeout: cfg.timeout,
        },
        frames,
    );
    let connecting = Instant::now();
    let connect_limit = Duration::from_secs(60) + Duration::from_millis(10) * cfg.chargers as u32;
    if !fleet
        .wait_for(connect_limit, |c| get(&c.accepted) >= n)
        .await
    {
        tracing::warn!(
            accepted = get(&fleet.counters.accepted),
            "not every charger was accepted within {connect_limit:?}"
        );
    }
    let connect_s = connecting.elapsed().as_secs_f64();
    let _ = fleet.take_boot_latency();
    if cfg.has(Phase::Memory) {
        // One whole interval: every charger heartbeats once (its first beat
        // falls at a random point of its first interval), plus time to answer.
        tokio::time::sleep(cfg.heartbeat_interval + Duration::from_secs(1)).await;
        let rss = target.rss_kib()?;
        let c = &fleet.counters;
        let accepted = get(&c.accepted);
        report.memory = Some(Memory {
            chargers: cfg.chargers,
            accepted,
            connect_s,
            rss_before_kib: rss_before,
            rss_with_chargers_kib: rss,
            kib_per_charger: (rss as f64 - rss_before as f64) / accepted.max(1) as f64,
            heartbeat_interval_s: cfg.heartbeat_interval.as_secs(),
            heartbeats_sent: get(&c.heartbeats_sent),
            heartbeats_answered: get(&c.heartbeats_answered),
            heartbeat_errors: get(&c.heartbeat_errors),
            heartbeat_timeouts: get(&c.heartbeat_timeouts),
        });
        tracing::info!(
            kib_per_charger = report.memory.as_ref().map(|m| m.kib_per_charger),
            "memory"
        );
    }
    if cfg.has(Phase::Restart) {
        let c = fleet.counters.clone();
        let connected = get(&c.accepted);
        tracing::info!(connected, "SIGTERM");
        let ended = target.terminate(cfg.shutdown_limit).await?;
        report.shutdown = Some(Shutdown {
            chargers_connected: connected,
            seconds: ended.seconds,
            killed: ended.killed,
            exit_code: ended.exit_code,
        });
        // Every charger has seen its connection end before the server is back.
        fleet
            .wait_for(Duration::from_secs(10), |c| get(&c.connected) == 0)
            .await;
        let _ = fleet.take_boot_latency();
        let (boots, boot_errors, failures) =
            (get(&c.boots), get(&c.boot_errors), get(&c.connect_failures));
        let health_after = target.start(START_LIMIT).await?;
        let healthy = Instant::now();
        tracing::info!(
            health_after_s = health_after.as_secs_f64(),
            "restarted; chargers reconnecting"
        );
        let back = fleet
            .wait_for(cfg.restart_limit, |c| get(&c.accepted) >= connected)
            .await;
        let all_accepted_after_s = back.then(|| healthy.elapsed().as_secs_f64());
        report.restart = Some(Restart {
            chargers: connected as usize,
            health_after_s: health_after.as_secs_f64(),
            all_accepted_after_s,
            accepted: get(&c.accepted),
            boots: get(&c.boots) - boots,
            boot_errors: get(&c.boot_errors) - boot_errors,
            connect_failures: get(&c.connect_failures) - failures,
            boot_latency: fleet.take_boot_latency(),
        });
        tracing::info!(all_accepted_after_s, "reconnect storm");
    }
    fleet.stop().await;
    Ok(())
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Stored counts and frames exchanged at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    counts: IngestCounts,
    frames: u64,
}

async fn snapshot(
    target: &Target,
    stores: bool,
    frames: &Frames,
) -> anyhow::Result<Option<Snapshot>> {
    if !stores {
        return Ok(None);
    }
    Ok(Some(Snapshot {
        frames: frames.exchanged(),
        counts: target.api.ingest_counts().await?,
    }))
}

/// What was stored and logged since `before`, against what was acknowledged
/// and exchanged.
async fn check(
    target: &Target,
    stores: bool,
    frames: &Frames,
    before: Option<Snapshot>,
    acknowledged: u64,
) -> anyhow::Result<Option<IngestCheck>> {
    let (Some(before), Some(after)) = (before, snapshot(target, stores, frames).await?) else {
        return Ok(None);
    };
    let stored = after.counts.sampled_values - before.counts.sampled_values;
    let acknowledged_values = acknowledged * SAMPLED_VALUES_PER_MESSAGE;
    Ok(Some(IngestCheck {
        acknowledged_meter_values: acknowledged,
        acknowledged_sampled_values: acknowledged_values,
        stored_meter_value_messages: after.counts.meter_value_messages
            - before.counts.meter_value_messages,
        stored_sampled_values: stored,
        stored_equals_acknowledged: stored == acknowledged_values as i64,
        frames_exchanged: after.frames - before.frames,
        frames_logged: after.counts.logged_frames - before.counts.logged_frames,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_in_any_order_once_each() {
        assert_eq!(
            Phase::parse_list("open, closed,open").unwrap(),
            [Phase::Open, Phase::Closed]
        );
        assert_eq!(Phase::parse_list("shutdown").unwrap(), [Phase::Restart]);
        assert!(Phase::parse_list("warp").is_err());
        assert!(Phase::parse_list("").is_err());
    }
}
