//! The simulator against the real `csms` server, started in-process on a fresh
//! SQLite file and on a fresh PostgreSQL database
//! (`CSMS_TEST_POSTGRES_URL`): what the chargers believe happened must be exactly
//! what the server stored.
//!
//! - a fleet of 30 chargers with random drivers: every finished session is a
//!   stopped transaction with the same id, charger, connector, meter readings
//!   and energy, and there is no transaction the simulator does not know;
//! - the outage scenario: the samples queued offline and replayed later are all
//!   stored, with their original timestamps;
//! - lost answers (StartTransaction and MeterValues retransmitted, with the same
//!   or a new message id): no second transaction and no doubled samples.
//!
//! Single chargers talk to the server through a small WebSocket relay ([`Tap`])
//! that records every frame the charger sent, so the tests know what the
//! simulator sent independently of what the server made of it.

#[path = "../../tests/common/require.rs"]
mod require;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use csms::store::{IdTagRecord, StoredSample, TransactionFilter, TransactionRecord, UserRecord};
use csms_sim::scenario::{self, Builtin, SessionPlan, Step, VehicleSpec};
use csms_sim::{fleet, spawn, ChargerConfig, ChargerModel, Endpoint, FleetConfig, Recorder};
use csms_sim::{SessionRecord, SimClock, Summary};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

const ENERGY: &str = "Energy.Active.Import.Register";

// ---------------------------------------------------------------- backends

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each test body once on SQLite and once on PostgreSQL (without a
/// configured PostgreSQL: a failure under CI, a skip said on stderr elsewhere;
/// see `tests/common/require.rs` of the server).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if super::require::postgres_url().is_none() {
                    return;
                }
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}

on_both_backends!(
    a_fleet_and_the_server_agree_on_every_session,
    an_outage_replays_every_sample_into_the_server,
    a_lost_start_answer_resent_with_the_same_id_makes_one_transaction,
    a_lost_start_answer_resent_with_a_new_id_makes_one_transaction,
    lost_meter_values_answers_do_not_double_samples,
);

fn postgres_url() -> Option<String> {
    std::env::var("CSMS_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh database: a SQLite file in a temp dir, or a PostgreSQL database
/// `csms_sim_test_<uuid>` that is dropped again afterwards (also when the test fails).
struct TestDatabase {
    url: String,
    _dir: Option<tempfile::TempDir>,
    postgres_name: Option<String>,
}

impl TestDatabase {
    async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                TestDatabase {
                    url: format!("sqlite://{}", dir.path().join("csms.db").display()),
                    _dir: Some(dir),
                    postgres_name: None,
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin_url = postgres_url().expect("CSMS_TEST_POSTGRES_URL");
                let name = format!("csms_sim_test_{:032x}", rand::random::<u128>());
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                let _ = admin.close().await;
                let (base, _) = admin_url.rsplit_once('/').expect("URL has a database path");
                TestDatabase {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    postgres_name: Some(name),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        let admin_url = postgres_url().unwrap_or_default();
        // Drop runs inside the test's runtime: a thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

// ---------------------------------------------------------------- the real server

struct Server {
    port: u16,
    state: csms::state::AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDatabase,
}

impl Server {
    async fn start(backend: Backend) -> Server {
        let db = TestDatabase::new(backend).await;
        let config = csms::config::Config::for_tests(db.url.clone());
        let app = csms::app::Application::build(config)
            .await
            .expect("server builds");
        let port = app.port();
        let state = app.state().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Server {
            port,
            state,
            stop: Some(stop),
            task: Some(task),
            _db: db,
        }
    }

    fn ocpp_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ocpp", self.port)
    }

    /// A driver (user) owning `id_tag`, so the server answers it `Accepted`.
    async fn driver_with_tag(&self, user_id: &str, id_tag: &str) {
        let now = Utc::now();
        let store = &self.state.store;
        store
            .upsert_user(&UserRecord {
                id: user_id.into(),
                email: Some(format!("{user_id}@example.com")),
                name: user_id.into(),
                role: "driver".into(),
                password_hash: None,
                battery_capacity_wh: None,
                created_at: now,
            })
            .await
            .expect("user");
        store
            .upsert_id_tag(&IdTagRecord {
                id_tag: id_tag.into(),
                user_id: Some(user_id.into()),
                status: "Accepted".into(),
                expiry_date: None,
                parent_id_tag: None,
                created_at: now,
            })
            .await
            .expect("idTag");
    }

    async fn all_transactions(&self) -> Vec<TransactionRecord> {
        self.state
            .store
            .transactions(TransactionFilter {
                limit: Some(100_000),
                ..Default::default()
            })
            .await
            .expect("transactions")
    }

    async fn transactions_of(&self, charger_id: &str) -> Vec<TransactionRecord> {
        self.state
            .store
            .transactions(TransactionFilter {
                charger_id: Some(charger_id.into()),
                ..Default::default()
            })
            .await
            .expect("transactions")
    }

    async fn meter_values(&self, tx: i64) -> Vec<StoredSample> {
        self.state
            .store
            .meter_values(tx)
            .await
            .expect("meter values")
    }

    /// Anomalies the server flagged for these chargers (kind, detail), for messages.
    async fn anomalies(&self, charger_id: Option<&str>) -> Vec<String> {
        self.state
            .store
            .anomalies(charger_id, 1000)
            .await
            .expect("anomalies")
            .iter()
            .map(|a| format!("{a:?}"))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

// ---------------------------------------------------------------- the relay that records

/// One text frame a charger sent: which connection of that charger (1, 2, ...) and the text.
#[derive(Debug, Clone)]
struct Sent {
    connection: u32,
    text: String,
}

/// A WebSocket relay between the chargers and the server: accepts `/ocpp/{id}`
/// with subprotocol `ocpp1.6`, opens the same path on the server, passes frames
/// both ways, and records what each charger sent. A charger closing or dropping
/// its socket drops the server side too, as a lost network would.
#[derive(Clone)]
struct Tap {
    url: String,
    sent: Arc<Mutex<HashMap<String, Vec<Sent>>>>,
}

impl Tap {
    async fn start(upstream: String) -> Tap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = Tap {
            url: format!("ws://{}/ocpp", listener.local_addr().unwrap()),
            sent: Arc::default(),
        };
        let sent = tap.sent.clone();
        let connections: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, sent, connections) =
                    (upstream.clone(), sent.clone(), connections.clone());
                tokio::spawn(relay(stream, upstream, sent, connections));
            }
        });
        tap
    }

    /// The CALLs a charger sent, in order: (connection, message id, action, payload).
    fn calls(&self, charger: &str) -> Vec<(u32, String, String, Value)> {
        let sent = self.sent.lock().unwrap();
        sent.get(charger)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let frame: Value = serde_json::from_str(&s.text).ok()?;
                (frame[0] == 2).then(|| {
                    (
                        s.connection,
                        frame[1].as_str().unwrap_or_default().to_owned(),
                        frame[2].as_str().unwrap_or_default().to_owned(),
                        frame[3].clone(),
                    )
                })
            })
            .collect()
    }
}

#[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
async fn relay(
    stream: tokio::net::TcpStream,
    upstream: String,
    sent: Arc<Mutex<HashMap<String, Vec<Sent>>>>,
    connections: Arc<Mutex<HashMap<String, u32>>>,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    let mut path = String::new();
    let callback = |req: &Request, mut resp: Response| {
        path = req.uri().path().to_string();
        resp.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("ocpp1.6"),
        );
        Ok(resp)
    };
    let Ok(mut charger) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let id = path.rsplit('/').next().unwrap_or_default().to_string();
    let base = upstream.trim_end_matches("/ocpp");
    let mut request = format!("{base}{path}").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("ocpp1.6"),
    );
    let Ok((mut server, _)) = tokio_tungstenite::connect_async(request).await else {
        let _ = charger.close(None).await;
        return;
    };
    let connection = {
        let mut c = connections.lock().unwrap();
        let n = c.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    loop {
        tokio::select! {
            m = charger.next() => match m {
                Some(Ok(Message::Text(text))) => {
                    sent.lock().unwrap().entry(id.clone()).or_default().push(Sent {
                        connection,
                        text: text.to_string(),
                    });
                    if server.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            m = server.next() => match m {
                Some(Ok(Message::Text(text))) => {
                    if charger.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Like a dropped network: neither side gets a close frame.
    drop(server);
    drop(charger);
}

// ---------------------------------------------------------------- comparisons

fn parse_ts(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("timestamp {text:?}: {e}"))
        .with_timezone(&Utc)
}

/// A session as the simulator recorded it and its transaction as the server
/// stored it must agree on everything both know.
fn assert_same_session(s: &SessionRecord, tx: &TransactionRecord) {
    let what = format!("simulator {s:?}\nserver {tx:?}");
    assert_eq!(tx.id, s.transaction_id as i64, "{what}");
    assert_eq!(tx.charger_id, s.charger_id, "charger: {what}");
    assert_eq!(tx.connector_id, s.connector_id as i64, "connector: {what}");
    assert_eq!(tx.id_tag, s.id_tag, "idTag: {what}");
    assert_eq!(tx.id_tag_status, "Accepted", "idTag status: {what}");
    assert_eq!(tx.status, "stopped", "status: {what}");
    assert_eq!(tx.meter_start, s.meter_start, "meterStart: {what}");
    assert_eq!(tx.meter_stop, Some(s.meter_stop), "meterStop: {what}");
    assert_eq!(tx.energy_wh, s.energy_wh as f64, "energy (Wh): {what}");
    assert_eq!(
        tx.stop_reason.as_deref(),
        Some(s.stop_reason.as_str()),
        "stop reason: {what}"
    );
    assert_eq!(tx.start_time, parse_ts(&s.start_time), "start time: {what}");
    assert_eq!(
        tx.stop_time,
        Some(parse_ts(&s.stop_time)),
        "stop time: {what}"
    );
}

/// Every Energy.Active.Import.Register sample in a MeterValues or
/// StopTransaction payload: (timestamp, value).
fn energy_samples(action: &str, payload: &Value) -> Vec<(DateTime<Utc>, String)> {
    let list = match action {
        "MeterValues" => &payload["meterValue"],
        "StopTransaction" => &payload["transactionData"],
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for mv in list.as_array().into_iter().flatten() {
        let at = parse_ts(mv["timestamp"].as_str().expect("meterValue timestamp"));
        for sv in mv["sampledValue"].as_array().into_iter().flatten() {
            if sv["measurand"] == ENERGY && sv.get("phase").is_none() {
                out.push((at, sv["value"].as_str().unwrap().to_owned()));
            }
        }
    }
    out
}

/// The energy samples a charger sent for one transaction, every copy
/// (retransmissions included), from the relay's record.
fn energy_sent(tap: &Tap, charger: &str, tx: i64) -> Vec<(DateTime<Utc>, String)> {
    tap.calls(charger)
        .iter()
        .filter(|(_, _, action, p)| {
            (action == "MeterValues" || action == "StopTransaction")
                && p["transactionId"].as_i64() == Some(tx)
        })
        .flat_map(|(_, _, action, p)| energy_samples(action, p))
        .collect()
}

fn energy_stored(samples: &[StoredSample]) -> Vec<(DateTime<Utc>, String)> {
    samples
        .iter()
        .filter(|s| s.measurand == ENERGY && s.phase.is_none())
        .map(|s| (s.sampled_at, s.value.clone()))
        .collect()
}

/// Stored samples must be unique: a (time, measurand, phase, value) twice is a doubled sample.
fn assert_no_doubled_samples(samples: &[StoredSample]) {
    let mut seen = BTreeMap::new();
    for s in samples {
        let key = (
            s.sampled_at,
            s.measurand.clone(),
            s.phase.clone(),
            s.context.clone(),
            s.value.clone(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "doubled samples in the server: {doubled:?}"
    );
}

// ---------------------------------------------------------------- single chargers

fn single_charger(id: &str, speed: f64) -> (ChargerConfig, SimClock) {
    let mut cfg = ChargerConfig::new(id);
    // Start the simulated clock in the past, so the charger's timestamps stay
    // behind the server's clock however fast it runs.
    let clock = SimClock::new(Utc::now() - chrono::Duration::hours(3), speed);
    cfg.clock = clock;
    cfg.reconnect_delay = Duration::from_millis(100);
    cfg.initial_register_wh = 12_345;
    cfg.seed = 7;
    (cfg, clock)
}

/// Runs steps on one charger connected through `tap`; returns the summary.
async fn run_single(
    tap: &Tap,
    cfg: ChargerConfig,
    clock: SimClock,
    parts: &[&[Step]],
) -> (Summary, Vec<DateTime<Utc>>) {
    let rec = Arc::new(Recorder::default());
    let mut h = spawn(cfg, Arc::new(Endpoint::new(&tap.url)), rec.clone());
    h.wait_for(Duration::from_secs(20), "registered", |v| v.accepted)
        .await
        .expect("the server accepts the boot");
    // The simulated time at which each part started.
    let mut marks = Vec::new();
    for steps in parts {
        marks.push(clock.now());
        scenario::run_steps(&mut h, &clock, steps)
            .await
            .expect("scenario runs");
    }
    h.wait_for(Duration::from_secs(20), "idle", |v| v.idle())
        .await
        .expect("everything delivered");
    h.shutdown(true).await;
    (rec.summary(0.0), marks)
}

// ---------------------------------------------------------------- 1. the fleet

async fn a_fleet_and_the_server_agree_on_every_session(backend: Backend) {
    let server = Server::start(backend).await;
    const CHARGERS: usize = 30;
    const CONNECTORS: u32 = 2;
    const SPEED: f64 = 240.0; // a simulated minute every 0.25 s
    let run_for = Duration::from_secs(20);
    for n in 1..=CHARGERS {
        for c in 1..=CONNECTORS {
            // The fleet's default cards: TAG-{n:05}-{connector}, one driver each.
            let tag = format!("TAG-{n:05}-{c}");
            server
                .driver_with_tag(&format!("driver-{n}-{c}"), &tag)
                .await;
        }
    }
    // The simulated clock ends about now, so no timestamp is in the server's future.
    let simulated = chrono::Duration::milliseconds((run_for.as_secs_f64() * SPEED * 1000.0) as i64);
    // The drivers stop at `run_for` after the fleet starts, so no earlier than this.
    let summary = fleet::run(FleetConfig {
        endpoint: Endpoint::new(server.ocpp_url()),
        chargers: CHARGERS,
        model: ChargerModel {
            connectors: CONNECTORS,
            ..ChargerModel::default()
        },
        speed: SPEED,
        seed: 42,
        run_for,
        ramp_up: Duration::from_secs(1),
        session_probability: 0.3,
        session_minutes: (10.0, 45.0),
        // Sessions still running when the drivers stop are stopped and
        // delivered, so every transaction ends and the comparison is exact.
        stop_sessions_at_end: true,
        start_time: Some(Utc::now() - simulated - chrono::Duration::minutes(10)),
        ..FleetConfig::default()
    })
    .await
    .expect("fleet runs");

    let stats = &summary.stats;
    let _ = writeln!(
        std::io::stderr(),
        "fleet on {backend:?}: {} sessions, {} Wh, {} calls, {} errors, {} timeouts, {} connect failures, {} disconnects",
        summary.sessions.len(),
        summary.total_energy_wh,
        stats.calls_sent,
        stats.call_errors,
        stats.timeouts,
        stats.connect_failures,
        stats.disconnects
    );
    assert!(
        summary.sessions.len() > 40,
        "too few sessions to say anything: {}",
        summary.sessions.len()
    );
    assert_eq!(stats.call_errors, 0, "the server answered CALLERRORs");
    assert_eq!(stats.timeouts, 0, "the server left CALLs unanswered");
    assert_eq!(
        stats.sessions_started,
        stats.sessions_finished + stats.active_sessions.max(0) as u64,
        "every session started is finished or still active"
    );
    assert_eq!(summary.sessions.len() as u64, stats.sessions_finished);

    let transactions = server.all_transactions().await;
    let by_id: HashMap<i64, &TransactionRecord> = transactions.iter().map(|t| (t.id, t)).collect();
    let mut seen = BTreeSet::new();
    for s in &summary.sessions {
        assert!(
            seen.insert(s.transaction_id),
            "transactionId {} reported twice by the simulator",
            s.transaction_id
        );
        let tx = by_id
            .get(&(s.transaction_id as i64))
            .unwrap_or_else(|| panic!("no transaction in the server for {s:?}"));
        assert_same_session(s, tx);
    }
    // Every session running when the drivers stop is stopped (reason Other)
    // and delivered before the fleet returns, and a charger that is shutting
    // down starts nothing new: the server holds exactly the simulator's sessions.
    let unknown: Vec<&TransactionRecord> = transactions
        .iter()
        .filter(|t| !seen.contains(&(t.id as i32)))
        .collect();
    assert!(
        unknown.is_empty(),
        "transactions in the server the simulator never finished: {unknown:#?}"
    );
    assert_eq!(
        stats.active_sessions, 0,
        "sessions left running by the simulator"
    );
    assert_eq!(transactions.len(), summary.sessions.len());
    let server_total: f64 = transactions
        .iter()
        .filter(|t| seen.contains(&(t.id as i32)))
        .map(|t| t.energy_wh)
        .sum();
    assert_eq!(server_total, summary.total_energy_wh as f64, "total energy");
    let stopped_at_end = summary
        .sessions
        .iter()
        .filter(|s| s.stop_reason == "Other")
        .count();
    assert!(
        stopped_at_end < summary.sessions.len(),
        "some sessions ended by their drivers"
    );
    let anomalies = server.anomalies(None).await;
    assert!(
        anomalies.is_empty(),
        "server flagged anomalies: {anomalies:#?}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- 2. the outage

async fn an_outage_replays_every_sample_into_the_server(backend: Backend) {
    let server = Server::start(backend).await;
    let tap = Tap::start(server.ocpp_url()).await;
    server.driver_with_tag("driver-outage", "TAG-OUTAGE").await;
    const SPEED: f64 = 300.0; // meter values every 0.2 s
    let plan = SessionPlan {
        id_tag: "TAG-OUTAGE".into(),
        vehicle: VehicleSpec {
            soc: 20.0,
            ..VehicleSpec::default()
        },
        charge_for: Duration::from_secs(40 * 60),
        outage: Duration::from_secs(20 * 60),
        ..SessionPlan::default()
    };
    let steps = Builtin::Outage.steps(&plan);
    let cut = steps
        .iter()
        .position(|s| matches!(s, Step::Outage(_)))
        .expect("the outage scenario has an outage");
    let (cfg, clock) = single_charger("SIM-OUTAGE", SPEED);
    let (summary, marks) = run_single(&tap, cfg, clock, &[&steps[..cut], &steps[cut..]]).await;
    let outage_from = marks[1];
    let outage_to = outage_from + chrono::Duration::from_std(plan.outage).unwrap();

    assert_eq!(summary.sessions.len(), 1, "{}", summary.to_text());
    let s = &summary.sessions[0];
    assert!(s.faults.iter().any(|f| f == "outage"), "{s:?}");
    assert!(s.energy_wh > 0, "{s:?}");

    // The relay saw the charger reconnect, and what was made offline go out after it.
    let calls = tap.calls("SIM-OUTAGE");
    let connections = calls.iter().map(|c| c.0).max().unwrap_or(0);
    assert!(connections >= 2, "the charger reconnected after the outage");
    let sent = energy_sent(&tap, "SIM-OUTAGE", s.transaction_id as i64);
    let offline: BTreeSet<_> = sent
        .iter()
        .filter(|(at, _)| *at > outage_from && *at < outage_to)
        .cloned()
        .collect();
    assert!(
        offline.len() >= 15,
        "20 simulated minutes offline make about 20 samples, got {}",
        offline.len()
    );
    // Made offline, so sent only after the reconnect, with their original timestamps.
    for (connection, _, action, payload) in &calls {
        let made_offline = energy_samples(action, payload)
            .iter()
            .any(|(at, _)| *at > outage_from && *at < outage_to);
        assert!(
            !made_offline || *connection >= 2,
            "{action} made offline went out on connection {connection}: {payload}"
        );
    }

    let txs = server.transactions_of("SIM-OUTAGE").await;
    assert_eq!(txs.len(), 1, "{txs:#?}");
    assert_same_session(s, &txs[0]);
    let stored = server.meter_values(txs[0].id).await;
    assert_no_doubled_samples(&stored);
    let stored_energy = energy_stored(&stored);
    let stored_set: BTreeSet<_> = stored_energy.iter().cloned().collect();
    let sent_set: BTreeSet<_> = sent.iter().cloned().collect();
    let missing: Vec<_> = offline.difference(&stored_set).collect();
    assert!(
        missing.is_empty(),
        "offline samples not stored: {missing:?}"
    );
    assert_eq!(
        stored_set, sent_set,
        "every energy sample the charger sent is stored, nothing else"
    );
    assert_eq!(stored_energy.len(), sent_set.len(), "each stored once");
    let _ = writeln!(
        std::io::stderr(),
        "outage on {backend:?}: {} energy samples sent ({} distinct), {} made offline, {} stored; {} Wh",
        sent.len(),
        sent_set.len(),
        offline.len(),
        stored_energy.len(),
        s.energy_wh
    );
    // The last register the server has is the charger's meterStop.
    assert_eq!(txs[0].last_register_wh, Some(s.meter_stop as f64));
    let anomalies = server.anomalies(Some("SIM-OUTAGE")).await;
    assert!(
        anomalies.is_empty(),
        "server flagged anomalies: {anomalies:#?}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- 3. lost answers

/// Runs a session whose steps lose answers; checks the server has one
/// transaction equal to the simulator's session and no doubled samples.
/// Returns the charger's CALLs as the relay saw them.
async fn lost_answers(
    backend: Backend,
    charger: &str,
    steps: Vec<Step>,
    fault: &str,
) -> Vec<(u32, String, String, Value)> {
    let server = Server::start(backend).await;
    let tap = Tap::start(server.ocpp_url()).await;
    let tag = format!("TAG-{charger}");
    server
        .driver_with_tag(&format!("driver-{charger}"), &tag)
        .await;
    let steps: Vec<Step> = steps
        .into_iter()
        .map(|s| match s {
            Step::Tag { connector, .. } => Step::Tag {
                connector,
                id_tag: tag.clone(),
            },
            other => other,
        })
        .collect();
    let (cfg, clock) = single_charger(charger, 600.0);
    let (summary, _) = run_single(&tap, cfg, clock, &[&steps]).await;
    assert_eq!(summary.sessions.len(), 1, "{}", summary.to_text());
    let s = &summary.sessions[0];
    assert!(s.faults.iter().any(|f| f == fault), "{s:?}");

    let txs = server.transactions_of(charger).await;
    assert_eq!(txs.len(), 1, "one transaction, not two: {txs:#?}");
    assert_same_session(s, &txs[0]);
    let stored = server.meter_values(txs[0].id).await;
    assert_no_doubled_samples(&stored);
    let sent: BTreeSet<_> = energy_sent(&tap, charger, txs[0].id).into_iter().collect();
    let stored_energy = energy_stored(&stored);
    assert_eq!(stored_energy.len(), sent.len(), "each sample stored once");
    let _ = writeln!(
        std::io::stderr(),
        "{charger} on {backend:?}: {} CALLs through the relay, {} distinct energy samples, {} stored",
        tap.calls(charger).len(),
        sent.len(),
        stored_energy.len()
    );
    assert_eq!(stored_energy.into_iter().collect::<BTreeSet<_>>(), sent);
    let anomalies = server.anomalies(Some(charger)).await;
    assert!(
        anomalies.is_empty(),
        "server flagged anomalies: {anomalies:#?}"
    );
    server.stop().await;
    tap.calls(charger)
}

fn short_plan() -> SessionPlan {
    SessionPlan {
        charge_for: Duration::from_secs(20 * 60),
        ..SessionPlan::default()
    }
}

async fn a_lost_start_answer_resent_with_the_same_id_makes_one_transaction(backend: Backend) {
    let calls = lost_answers(
        backend,
        "SIM-LOST-SAME",
        Builtin::LostAnswer.steps(&short_plan()),
        "lost-answer",
    )
    .await;
    let starts: Vec<_> = calls.iter().filter(|c| c.2 == "StartTransaction").collect();
    assert_eq!(starts.len(), 2, "sent, answer lost, sent again: {starts:?}");
    assert_eq!(starts[0].1, starts[1].1, "the same message id");
    assert_eq!(starts[0].3, starts[1].3, "the same content");
    assert!(starts[1].0 > starts[0].0, "again on a new connection");
}

async fn a_lost_start_answer_resent_with_a_new_id_makes_one_transaction(backend: Backend) {
    let calls = lost_answers(
        backend,
        "SIM-LOST-NEW",
        Builtin::LostAnswerNewId.steps(&short_plan()),
        "lost-answer",
    )
    .await;
    let starts: Vec<_> = calls.iter().filter(|c| c.2 == "StartTransaction").collect();
    assert_eq!(starts.len(), 2, "sent, answer lost, sent again: {starts:?}");
    assert_ne!(starts[0].1, starts[1].1, "a new message id");
    assert_eq!(starts[0].3, starts[1].3, "the same content");
}

async fn lost_meter_values_answers_do_not_double_samples(backend: Backend) {
    let tag = || Step::Tag {
        connector: 1,
        id_tag: String::new(), // filled in by lost_answers
    };
    let wait = |m: u64| Step::Wait(Duration::from_secs(m * 60));
    let until = |condition| Step::Await {
        condition,
        timeout: Duration::from_secs(30),
    };
    use csms_sim::scenario::Condition;
    let steps = vec![
        tag(),
        Step::Plug {
            connector: 1,
            vehicle: VehicleSpec::default(),
        },
        until(Condition::Charging(1)),
        wait(5),
        // Once charging, the next transaction message is a MeterValues.
        Step::LoseAnswer { reuse_id: true },
        wait(5),
        Step::LoseAnswer { reuse_id: false },
        wait(5),
        tag(),
        until(Condition::Stopped(1)),
        Step::Unplug { connector: 1 },
        until(Condition::Sessions(1)),
    ];
    let calls = lost_answers(backend, "SIM-LOST-MV", steps, "lost-answer").await;
    // The relay saw MeterValues sent twice with the same content: once with
    // the same id, once with a new one.
    let mut copies: HashMap<String, Vec<&String>> = HashMap::new();
    for (_, id, action, payload) in &calls {
        if action == "MeterValues" {
            copies.entry(payload.to_string()).or_default().push(id);
        }
    }
    let resent: Vec<_> = copies.values().filter(|ids| ids.len() > 1).collect();
    assert!(
        resent.iter().any(|ids| ids[0] == ids[1]),
        "a MeterValues resent with the same id: {resent:?}"
    );
    assert!(
        resent.iter().any(|ids| ids[0] != ids[1]),
        "a MeterValues resent with a new id: {resent:?}"
    );
}

// ---------------------------------------------------------------- shutting down mid-authorization

/// A card and a plug-in immediately followed by `shutdown(true)`: the
/// Authorize is still unanswered when the charger takes the Shutdown. Its
/// answer must not open a transaction nobody is left to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_right_after_a_card_leaves_no_transaction_running() {
    use csms_sim::{Command, Vehicle, VehicleModel};
    let server = Server::start(Backend::Sqlite).await;
    server.driver_with_tag("driver-race", "TAG-RACE").await;
    let (cfg, _) = single_charger("SIM-RACE", 60.0);
    let rec = Arc::new(Recorder::default());
    let mut h = spawn(cfg, Arc::new(Endpoint::new(server.ocpp_url())), rec.clone());
    h.wait_for(Duration::from_secs(20), "idle", |v| v.idle())
        .await
        .expect("boots");
    h.send(Command::PresentIdTag {
        connector: 1,
        id_tag: "TAG-RACE".into(),
    })
    .await
    .unwrap();
    h.send(Command::PlugIn {
        connector: 1,
        vehicle: Vehicle::new(VehicleModel::default(), 20.0),
    })
    .await
    .unwrap();
    h.shutdown(true).await;
    let txs = server.transactions_of("SIM-RACE").await;
    let running: Vec<_> = txs.iter().filter(|t| t.status == "active").collect();
    assert!(
        running.is_empty(),
        "left running in the server: {running:#?}"
    );
    assert_eq!(
        rec.stats.snapshot().active_sessions,
        0,
        "left running in the simulator"
    );
    server.stop().await;
}
