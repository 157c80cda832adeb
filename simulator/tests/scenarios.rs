//! The built-in scenarios and a scenario file, run end to end against the fake central system.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeCsms;
use csms_sim::scenario::{self, Builtin, SessionPlan, VehicleSpec};
use csms_sim::{spawn, ChargerConfig, Endpoint, Recorder, SimClock, Summary};

async fn run(
    csms: &FakeCsms,
    id: &str,
    steps: Vec<scenario::Step>,
    skew: i64,
    clock: SimClock,
) -> Summary {
    let mut cfg = ChargerConfig::new(id);
    cfg.clock = clock;
    cfg.clock_skew_s = skew;
    cfg.reconnect_delay = Duration::from_millis(100);
    cfg.initial_register_wh = 5_000;
    let rec = Arc::new(Recorder::default());
    let mut h = spawn(cfg, Arc::new(Endpoint::new(&csms.url)), rec.clone());
    h.wait_for(Duration::from_secs(10), "registered", |v| v.accepted)
        .await
        .unwrap();
    scenario::run_steps(&mut h, &clock, &steps).await.unwrap();
    h.shutdown(true).await;
    rec.summary(0.0)
}

fn plan() -> SessionPlan {
    SessionPlan {
        charge_for: Duration::from_secs(20 * 60),
        outage: Duration::from_secs(5 * 60),
        ..SessionPlan::default()
    }
}

#[tokio::test]
async fn the_meter_reset_scenario_reports_a_register_that_went_back() {
    let csms = FakeCsms::start().await;
    let clock = SimClock::starting_now(1200.0);
    let s = run(&csms, "CP-MR", Builtin::MeterReset.steps(&plan()), 0, clock).await;
    let r = &s.sessions[0];
    assert_eq!(r.faults, ["meter-reset"]);
    assert_eq!(r.meter_start, 5_000);
    assert!(r.meter_stop < r.meter_start, "{r:?}");
    assert!(r.delivered_wh > 0 && r.energy_wh < 0);
}

#[tokio::test]
async fn the_clock_skew_scenario_sends_timestamps_off_by_the_skew() {
    let csms = FakeCsms::start().await;
    let clock = SimClock::starting_now(1200.0);
    let before = chrono::Utc::now();
    run(
        &csms,
        "CP-SKEW",
        Builtin::ClockSkew.steps(&plan()),
        -3600,
        clock,
    )
    .await;
    let start = &csms.of("StartTransaction")[0].payload;
    let t = ocpp_j::time::parse_charger_time(start["timestamp"].as_str().unwrap())
        .unwrap()
        .at;
    let off = (t - before).num_seconds();
    assert!((-3600..-3500).contains(&off), "{off}");
}

#[tokio::test]
async fn the_malformed_scenario_records_the_servers_answers_and_the_session_still_works() {
    let csms = FakeCsms::start().await;
    let clock = SimClock::starting_now(1200.0);
    let s = run(&csms, "CP-BAD", Builtin::Malformed.steps(&plan()), 0, clock).await;
    assert_eq!(s.probes.len(), scenario::MALFORMED.len());
    assert_eq!(s.sessions.len(), 1);
    // The fake server answers every CALL it can read; the others get no answer.
    let raw = csms.raw();
    assert!(raw.iter().any(|(_, t)| t == "this is not json"));
    let none = s.probes.iter().filter(|p| p.answer == "none").count();
    assert!(none >= 2, "{:?}", s.probes);
}

#[tokio::test]
async fn the_example_scenario_file_runs_to_the_end() {
    let csms = FakeCsms::start().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/outage-and-faults.txt"
    ))
    .unwrap();
    let steps = scenario::parse_script(&text, VehicleSpec::default()).unwrap();
    let clock = SimClock::starting_now(1200.0);
    let s = run(&csms, "CP-FILE", steps, 0, clock).await;
    assert_eq!(s.sessions.len(), 2, "{s:?}");
    let by_connector = |c: u32| s.sessions.iter().find(|r| r.connector_id == c).unwrap();
    assert_eq!(by_connector(1).faults, ["outage", "meter-reset"]);
    assert_eq!(by_connector(2).faults, ["lost-answer", "power-loss"]);
    assert_eq!(by_connector(2).stop_reason, "PowerLoss");
    // Three real StartTransactions (one of them sent twice); the fourth is a malformed probe.
    let starts: Vec<_> = csms
        .of("StartTransaction")
        .into_iter()
        .filter(|c| !c.id.starts_with("probe"))
        .collect();
    assert_eq!(starts.len(), 3, "one start was sent twice");
    assert_eq!(starts[1].id, starts[2].id);
}
