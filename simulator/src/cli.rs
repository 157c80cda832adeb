//! The command line: `csms-sim run`, `fleet`, `load`, `bench` and `trivial-server`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::bench::{self, BenchConfig, Phase, ServerKind};
use crate::charger::connection::{parse_source_addrs, tls_config};
use crate::charger::{spawn, ChargerConfig};
use crate::clock::SimClock;
use crate::fleet::{self, FleetConfig};
use crate::load::{self, LoadConfig, Mix};
use crate::scenario::{self, parse_duration, Builtin, SessionPlan, VehicleSpec};
use crate::summary::Recorder;
use crate::vehicle::{ChargerModel, PowerKind, VehicleModel};
use crate::Endpoint;

#[derive(Debug, Parser)]
#[command(
    name = "csms-sim",
    version,
    about = "OCPP 1.6J charger simulator: one charger, scenarios, fleets and load tests"
)]
pub struct Cli {
    /// More log output (-v: every frame, -vv: everything).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// One charger running a built-in scenario or a scenario file.
    Run(RunArgs),
    /// Many chargers with random sessions.
    Fleet(FleetArgs),
    /// A fixed message mix at a given rate; reports throughput and latency.
    Load(LoadArgs),
    /// Measures the csms server and a trivial server side by side: throughput,
    /// latency, the open-loop knee, memory per charger, shutdown, reconnect storm.
    Bench(BenchArgs),
    /// The benchmark's reference: answers every CALL with a fixed reply, stores nothing.
    TrivialServer(TrivialServerArgs),
}

/// Where the central system is and how to reach it.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Central system URL; the charger id is appended (`ws://host:port/ocpp/{id}`),
    /// or put `{id}` where it goes.
    #[arg(long, env = "CSMS_SIM_URL", default_value = "ws://127.0.0.1:8080/ocpp")]
    pub url: String,
    /// HTTP Basic password (security profile 1/2); the user is the charger id.
    #[arg(long, env = "CSMS_SIM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM file with the CA (or self-signed certificate) to trust for wss://.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any server certificate (test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Source addresses to bind outgoing connections to, round-robin:
    /// `127.0.0.1-127.0.0.8` or `127.0.0.2,127.0.0.3`.
    #[arg(long)]
    pub source_addrs: Option<String>,
}

impl ConnectArgs {
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let mut e = Endpoint::new(&self.url);
        if self.url.starts_with("wss:") {
            let pem = match &self.ca_file {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            e.tls = Some(tls_config(pem.as_deref(), self.insecure)?);
        }
        if let Some(spec) = &self.source_addrs {
            e.source_addrs = parse_source_addrs(spec)?;
        }
        Ok(e)
    }
}

/// The charger hardware and the simulated time.
#[derive(Debug, Args)]
pub struct ChargerArgs {
    /// Connectors per charger.
    #[arg(long, default_value_t = 2)]
    pub connectors: u32,
    /// Maximum power per connector in kW.
    #[arg(long, default_value_t = 22.0)]
    pub power_kw: f64,
    /// A DC charger (400 V) instead of three-phase AC (230 V).
    #[arg(long)]
    pub dc: bool,
    /// Time acceleration: 60 makes an hour of charging take a minute.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Seed for every random choice; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// MeterValueSampleInterval in simulated seconds.
    #[arg(long, default_value_t = 60)]
    pub meter_interval: u64,
    /// Seconds to wait for an answer before a CALL times out (real time).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub call_timeout: Duration,
}

impl ChargerArgs {
    fn model(&self) -> ChargerModel {
        let kind = if self.dc {
            PowerKind::Dc { voltage: 400.0 }
        } else {
            PowerKind::Ac {
                phases: 3,
                voltage: 230.0,
            }
        };
        ChargerModel {
            max_power_w: self.power_kw * 1000.0,
            connectors: self.connectors,
            kind,
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub charger: ChargerArgs,
    /// The charger's identity (the last segment of its URL).
    #[arg(long, default_value = "CP-0001")]
    pub id: String,
    /// Built-in scenario.
    #[arg(long, value_enum, default_value = "normal", conflicts_with = "script")]
    pub scenario: Builtin,
    /// Scenario file (see simulator/README.md for the format).
    #[arg(long)]
    pub script: Option<std::path::PathBuf>,
    /// Connector the built-in scenarios use.
    #[arg(long, default_value_t = 1)]
    pub connector: u32,
    /// idTag the driver of the built-in scenarios presents.
    #[arg(long, default_value = "TAG-0001")]
    pub id_tag: String,
    /// Simulated charging time of the built-in scenarios.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub charge_for: Duration,
    /// Simulated length of the outage (outage scenario).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub outage: Duration,
    /// Real time to wait for the server's remote commands (remote scenario).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub server_timeout: Duration,
    /// Battery capacity of the vehicle (kWh).
    #[arg(long, default_value_t = 60.0)]
    pub capacity_kwh: f64,
    /// State of charge of the vehicle on arrival (%).
    #[arg(long, default_value_t = 20.0)]
    pub soc: f64,
    /// Most power the vehicle takes on AC (kW).
    #[arg(long, default_value_t = 11.0)]
    pub vehicle_ac_kw: f64,
    /// Most power the vehicle takes on DC (kW).
    #[arg(long, default_value_t = 100.0)]
    pub vehicle_dc_kw: f64,
    /// Offset of the charger's clock in seconds (the clock-skew scenario uses 600 unless set).
    #[arg(long, allow_hyphen_values = true)]
    pub clock_skew: Option<i64>,
    /// Energy register at power-on (Wh); the meter-reset scenario uses 1000000 unless set.
    #[arg(long, default_value_t = 0)]
    pub meter_start: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub charger: ChargerArgs,
    /// How many chargers.
    #[arg(long, default_value_t = 10)]
    pub chargers: usize,
    /// Charger ids are this prefix and a five-digit number (`SIM-00001`).
    #[arg(long, default_value = "SIM-")]
    pub id_prefix: String,
    /// How long drivers keep arriving (real time); running sessions are then stopped.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Real time over which the chargers connect.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ramp_up: Duration,
    /// Chance that a driver arrives at an idle connector in a simulated minute.
    #[arg(long, default_value_t = 0.1)]
    pub session_probability: f64,
    /// Simulated session length in minutes, `MIN-MAX` or one number.
    #[arg(long, default_value = "20-60")]
    pub session_minutes: String,
    /// idTags drivers present, comma separated (default: `TAG-{n:05}-{connector}`,
    /// one per connector, n as in the charger id).
    #[arg(long, value_delimiter = ',')]
    pub id_tags: Vec<String>,
    /// Stop starting sessions after this many.
    #[arg(long)]
    pub max_sessions: Option<u64>,
    /// Leave sessions running at the end instead of stopping them.
    #[arg(long)]
    pub leave_running: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// How many charger connections carry the load.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Charger ids are this prefix and a five-digit number (`LOAD-00001`).
    #[arg(long, default_value = "LOAD-")]
    pub id_prefix: String,
    /// Messages per second over all connections; 0: as fast as the server answers.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long the load runs (after the ramp-up).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Real time over which the connections open and boot.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub ramp_up: Duration,
    /// Message mix: heartbeat, status, authorize, meter, transaction, datatransfer with weights.
    #[arg(
        long,
        default_value = "heartbeat=40,meter=40,status=10,authorize=5,transaction=5"
    )]
    pub mix: String,
    /// How long a CALL waits for its answer before it counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seed for the message mix; the same seed sends the same messages.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sizes left unset take the full-size defaults, or the quick ones with `--quick`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The csms binary (default: `csms` next to this executable, e.g. target/release/csms).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Run the csms server on a fresh PostgreSQL database created (and dropped)
    /// through this admin URL, instead of a fresh SQLite file.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Which servers to measure: csms, trivial.
    #[arg(long, default_value = "csms,trivial")]
    pub servers: String,
    /// Which phases to run: closed, open, memory, restart (restart includes shutdown).
    #[arg(long, default_value = "closed,open,memory,restart")]
    pub phases: String,
    /// A run of a few seconds per server (20 connections, 2 s, 200 chargers, two open-loop steps).
    #[arg(long)]
    pub quick: bool,
    /// Closed-loop connections [200].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Closed-loop duration [20s].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Open-loop connections [400].
    #[arg(long)]
    pub open_connections: Option<usize>,
    /// First open-loop rate, msg/s over all connections [500].
    #[arg(long)]
    pub open_start_rate: Option<f64>,
    /// Highest open-loop rate tried [128000].
    #[arg(long)]
    pub open_max_rate: Option<f64>,
    /// Bisection steps after the doubling [3].
    #[arg(long)]
    pub open_refine: Option<u32>,
    /// Length of each open-loop step [5s].
    #[arg(long, value_parser = parse_duration)]
    pub open_step: Option<Duration>,
    /// The open-loop latency limit: p99 below this many ms [50].
    #[arg(long)]
    pub p99_limit_ms: Option<f64>,
    /// Idle chargers for memory, shutdown and restart [19000].
    #[arg(long)]
    pub chargers: Option<usize>,
    /// Heartbeat interval the servers hand out [30s].
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// First reconnect backoff of the idle chargers (doubling to 30 s, ±50 % jitter) [1s].
    #[arg(long, value_parser = parse_duration)]
    pub reconnect_backoff: Option<Duration>,
    /// Source addresses for outgoing connections, round-robin [127.0.0.1-127.0.0.8].
    #[arg(long)]
    pub source_addrs: Option<String>,
    /// How long a CALL waits for its answer [10s].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// How long the chargers may take to be back after the restart [120s].
    #[arg(long, value_parser = parse_duration)]
    pub restart_limit: Option<Duration>,
    /// Keep the servers' logs in this directory.
    #[arg(long)]
    pub log_dir: Option<std::path::PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl BenchArgs {
    pub fn config(&self) -> anyhow::Result<BenchConfig> {
        let sim_bin = std::env::current_exe().context("finding this executable")?;
        let server_bin = match &self.server_bin {
            Some(path) => path.clone(),
            None => sim_bin.with_file_name(format!("csms{}", std::env::consts::EXE_SUFFIX)),
        };
        let mut c = if self.quick {
            BenchConfig::quick(server_bin, sim_bin)
        } else {
            BenchConfig::full(server_bin, sim_bin)
        };
        c.postgres = self.postgres.clone();
        c.servers = Vec::new();
        for name in self
            .servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            c.servers.push(match name {
                "csms" => ServerKind::Csms,
                "trivial" => ServerKind::Trivial,
                other => anyhow::bail!("unknown server {other} (csms, trivial)"),
            });
        }
        anyhow::ensure!(!c.servers.is_empty(), "no server selected");
        c.phases = Phase::parse_list(&self.phases)?;
        fn set<T: Copy>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = *v;
            }
        }
        set(&mut c.closed_connections, &self.connections);
        set(&mut c.duration, &self.duration);
        set(&mut c.open_connections, &self.open_connections);
        set(&mut c.knee.start_rate, &self.open_start_rate);
        set(&mut c.knee.max_rate, &self.open_max_rate);
        set(&mut c.knee.refine, &self.open_refine);
        set(&mut c.knee.step, &self.open_step);
        set(&mut c.knee.p99_limit_ms, &self.p99_limit_ms);
        set(&mut c.chargers, &self.chargers);
        set(&mut c.heartbeat_interval, &self.heartbeat_interval);
        set(&mut c.reconnect_backoff, &self.reconnect_backoff);
        set(&mut c.timeout, &self.timeout);
        set(&mut c.restart_limit, &self.restart_limit);
        if let Some(spec) = &self.source_addrs {
            c.source_addrs = parse_source_addrs(spec)?;
        }
        c.log_dir = self.log_dir.clone();
        anyhow::ensure!(
            c.closed_connections > 0 && c.open_connections > 0 && c.chargers > 0,
            "connections and chargers must be at least 1"
        );
        anyhow::ensure!(
            c.knee.start_rate > 0.0 && c.knee.max_rate >= c.knee.start_rate,
            "open-loop rates: 0 < --open-start-rate <= --open-max-rate"
        );
        Ok(c)
    }
}

#[derive(Debug, Args)]
pub struct TrivialServerArgs {
    /// Address to serve chargers on (`ws://ADDRESS/ocpp/{id}`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: std::net::SocketAddr,
    /// Interval in BootNotification answers.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Run(args) => run_one(args).await,
        Cmd::Fleet(args) => run_fleet(args).await,
        Cmd::Load(args) => run_load(args).await,
        Cmd::Bench(args) => run_bench(args).await,
        Cmd::TrivialServer(args) => {
            bench::trivial::serve(args.listen, args.heartbeat_interval).await
        }
    }
}

async fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let cfg = a.config()?;
    let report = bench::run(&cfg).await?;
    println!("{}", report.to_table());
    print!("{}", report.steps_table());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_one(a: RunArgs) -> anyhow::Result<()> {
    let endpoint = Arc::new(a.connect.endpoint()?);
    let clock = SimClock::starting_now(a.charger.speed);
    let vehicle = VehicleSpec {
        model: VehicleModel {
            capacity_kwh: a.capacity_kwh,
            max_ac_kw: a.vehicle_ac_kw,
            max_dc_kw: a.vehicle_dc_kw,
        },
        soc: a.soc,
    };
    let steps = match &a.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            scenario::parse_script(&text, vehicle)?
        }
        None => {
            let plan = SessionPlan {
                connector: a.connector,
                id_tag: a.id_tag.clone(),
                vehicle,
                charge_for: a.charge_for,
                outage: a.outage,
                server_timeout: a.server_timeout,
            };
            a.scenario.steps(&plan)
        }
    };
    let mut cfg = ChargerConfig::new(&a.id);
    cfg.password = a.connect.password.clone();
    cfg.model = a.charger.model();
    cfg.clock = clock;
    cfg.seed = a.charger.seed;
    cfg.meter_interval_s = a.charger.meter_interval;
    cfg.call_timeout = a.charger.call_timeout;
    // A register reset only shows against a register that had counted something.
    cfg.initial_register_wh = match (a.meter_start, a.scenario) {
        (0, Builtin::MeterReset) => 1_000_000,
        (m, _) => m,
    };
    cfg.source_addr = endpoint.source_addrs.first().copied();
    cfg.clock_skew_s = a.clock_skew.unwrap_or(if a.scenario == Builtin::ClockSkew {
        600
    } else {
        0
    });
    let recorder = Arc::new(Recorder::default());
    let started = tokio::time::Instant::now();
    let mut h = spawn(cfg, endpoint, recorder.clone());
    h.wait_for(Duration::from_secs(3600), "registered", |v| {
        v.accepted && v.connected
    })
    .await?;
    let outcome = tokio::select! {
        r = scenario::run_steps(&mut h, &clock, &steps) => r,
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted"); Ok(()) }
    };
    h.shutdown(true).await;
    let summary = recorder.summary(started.elapsed().as_secs_f64());
    print_summary(&summary, a.json)?;
    outcome
}

fn print_summary(s: &crate::Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        print!("{}", s.to_text());
    }
    Ok(())
}

fn parse_range(s: &str) -> anyhow::Result<(f64, f64)> {
    let parse = |x: &str| {
        x.trim()
            .parse::<f64>()
            .with_context(|| format!("bad number {x:?}"))
    };
    match s.split_once('-') {
        Some((lo, hi)) => Ok((parse(lo)?, parse(hi)?)),
        None => {
            let v = parse(s)?;
            Ok((v, v))
        }
    }
}

async fn run_fleet(a: FleetArgs) -> anyhow::Result<()> {
    let cfg = FleetConfig {
        endpoint: a.connect.endpoint()?,
        chargers: a.chargers,
        id_prefix: a.id_prefix,
        password: a.connect.password.clone(),
        model: a.charger.model(),
        speed: a.charger.speed,
        seed: a.charger.seed,
        run_for: a.duration,
        ramp_up: a.ramp_up,
        session_probability: a.session_probability,
        session_minutes: parse_range(&a.session_minutes)?,
        id_tags: a.id_tags,
        max_sessions: a.max_sessions,
        stop_sessions_at_end: !a.leave_running,
        meter_interval_s: a.charger.meter_interval,
        call_timeout: a.charger.call_timeout,
        progress: !a.quiet,
        ..FleetConfig::default()
    };
    let summary = fleet::run(cfg).await?;
    print_summary(&summary, a.json)
}

async fn run_load(a: LoadArgs) -> anyhow::Result<()> {
    let cfg = LoadConfig {
        endpoint: a.connect.endpoint()?,
        connections: a.connections,
        id_prefix: a.id_prefix,
        password: a.connect.password.clone(),
        rate: a.rate,
        run_for: a.duration,
        ramp_up: a.ramp_up,
        mix: Mix::parse(&a.mix)?,
        timeout: a.timeout,
        seed: a.seed,
    };
    let report = load::run(cfg).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
