//! `csms-sim bench --quick` against the real `csms` binary, so the benchmark
//! never rots: on a fresh SQLite file, and on a fresh PostgreSQL database
//! (`CSMS_TEST_POSTGRES_URL`; without it a failure under CI, a skip elsewhere). The JSON must hold every figure,
//! nothing may have failed, and the csms server must have stored exactly the
//! sampled values it acknowledged. No figure is compared with a time or a
//! throughput: those depend on the machine.
//!
//! The csms binary is built here (`cargo build -p csms --bin csms`, same
//! profile as this test) because a test of one package cannot depend on
//! another package's binary; `CSMS_BIN` names one to use instead.

#[path = "../../tests/common/require.rs"]
mod require;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The two runs share the machine's cores; one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn csms_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("CSMS_BIN") {
                return PathBuf::from(path);
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            build
                .args([
                    "build",
                    "-p",
                    "csms",
                    "--bin",
                    "csms",
                    "--message-format=json",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stderr(std::process::Stdio::inherit());
            // Cargo gives this test its package's variables; build scripts
            // watch some (CARGO_MANIFEST_DIR), and a nested build that saw
            // them would rebuild everything once more.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                let per_package = [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_BIN_",
                    "CARGO_CRATE_",
                ]
                .iter()
                .any(|p| key.starts_with(p));
                if per_package || key == "CARGO_PRIMARY_PACKAGE" || key == "CARGO_TARGET_TMPDIR" {
                    build.env_remove(key.as_ref());
                }
            }
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            let out = build.output().expect("cargo runs");
            assert!(out.status.success(), "cargo build -p csms failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "csms")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo names the csms executable")
        })
        .clone()
}

/// Runs the quick benchmark and returns its JSON.
fn quick_bench(postgres: Option<&str>) -> Value {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = csms_binary();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut bench = std::process::Command::new(env!("CARGO_BIN_EXE_csms-sim"));
    bench
        .arg("bench")
        .arg("--quick")
        .arg("--server-bin")
        .arg(&server)
        .arg("--json")
        .arg(&json)
        .arg("--log-dir")
        .arg(dir.path())
        .env("RUST_LOG", "csms_sim=warn");
    if let Some(url) = postgres {
        bench.arg("--postgres").arg(url);
    }
    let out = bench.output().expect("csms-sim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "csms-sim bench failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("| measure |"), "a table: {stdout}");
    let text = std::fs::read_to_string(&json).expect("the JSON file");
    serde_json::from_str(&text).expect("JSON")
}

fn number(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path} is a number: {at} in {v:#}"))
}

fn zero(v: &Value, path: &str) {
    assert_eq!(number(v, path), 0.0, "{path} in {v:#}");
}

fn latency(v: &Value, path: &str) {
    for p in ["p50Ms", "p99Ms", "p999Ms"] {
        assert!(number(v, &format!("{path}.{p}")) >= 0.0);
    }
}

/// Every figure of one server, and nothing failed.
fn every_figure(server: &Value, chargers: f64) {
    let closed = &server["closedLoop"];
    assert!(number(closed, "answered") > 0.0, "{closed:#}");
    number(closed, "msgPerS");
    latency(closed, "latency");
    for f in ["errors", "timeouts", "disconnects", "connectFailures"] {
        zero(closed, f);
    }

    let open = &server["openLoop"];
    number(open, "kneeMsgPerS");
    let steps = open["steps"].as_array().expect("open-loop steps");
    assert!(!steps.is_empty());
    for step in steps {
        number(step, "rate");
        number(step, "achievedMsgPerS");
        latency(step, "latency");
        for f in ["errors", "timeouts", "disconnects"] {
            zero(step, f);
        }
    }

    let memory = &server["memory"];
    assert_eq!(number(memory, "accepted"), chargers, "{memory:#}");
    number(memory, "kibPerCharger");
    assert!(number(memory, "heartbeatsAnswered") > 0.0, "{memory:#}");
    zero(memory, "heartbeatErrors");
    zero(memory, "heartbeatTimeouts");

    let shutdown = &server["shutdown"];
    number(shutdown, "seconds");
    assert_eq!(shutdown["killed"], false, "{shutdown:#}");

    let restart = &server["restart"];
    number(restart, "healthAfterS");
    number(restart, "allAcceptedAfterS");
    assert_eq!(number(restart, "accepted"), chargers, "{restart:#}");
    zero(restart, "bootErrors");
    latency(restart, "bootLatency");
}

fn stored_equals_acknowledged(check: &Value) {
    let acknowledged = number(check, "acknowledgedSampledValues");
    assert!(acknowledged > 0.0, "{check:#}");
    assert_eq!(acknowledged, 8.0 * number(check, "acknowledgedMeterValues"));
    assert_eq!(
        number(check, "storedSampledValues"),
        acknowledged,
        "{check:#}"
    );
    assert_eq!(check["storedEqualsAcknowledged"], true, "{check:#}");
    assert!(number(check, "framesExchanged") > 0.0);
    number(check, "framesLogged");
}

fn check_report(report: &Value, database: &str) {
    assert_eq!(report["settings"]["quick"], true);
    let chargers = number(report, "settings.chargers");
    let csms = &report["csms"];
    let trivial = &report["trivial"];
    assert_eq!(csms["database"], database);
    every_figure(csms, chargers);
    every_figure(trivial, chargers);
    let ingest = &csms["ingest"];
    stored_equals_acknowledged(&ingest["closedLoop"]);
    stored_equals_acknowledged(&ingest["openLoop"]);
    stored_equals_acknowledged(&ingest["total"]);
    assert!(
        trivial["ingest"].is_null(),
        "the trivial server stores nothing"
    );
}

#[test]
fn the_quick_benchmark_measures_csms_on_sqlite_and_the_trivial_server() {
    let report = quick_bench(None);
    check_report(&report, "sqlite");
}

#[test]
fn the_quick_benchmark_measures_csms_on_postgres_and_the_trivial_server() {
    let Some(url) = require::postgres_url() else {
        return;
    };
    let report = quick_bench(Some(&url));
    check_report(&report, "postgres");
}
