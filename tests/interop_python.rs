//! Interoperability with a charger written by someone else: the Python `ocpp`
//! library validates everything the server sends against the official
//! schemas. Without python3 with `ocpp` and `websockets` it fails under CI and
//! is skipped (and says so) elsewhere; `.ci/run` installs them.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

fn python_ocpp_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import ocpp, websockets"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        require::missing(
            "interop",
            "python3 with the `ocpp` and `websockets` packages is not installed \
             (python3 -m pip install ocpp==2.1.0 websockets)",
        );
    }
    ok
}

on_both_backends!(the_python_ocpp_charge_point_runs_a_whole_session);

async fn the_python_ocpp_charge_point_runs_a_whole_session(backend: Backend) {
    if !python_ocpp_available() {
        return;
    }
    let server = TestServer::start(backend).await;
    server.user_with_tag("py-driver", "PYTAG").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_charger.py"
    );
    let child = tokio::process::Command::new("python3")
        .args([script, &server.ws_url("CP-PY"), "PYTAG", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");

    // Once the session is done the charger lingers; send it a command.
    let mut answered = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopped = server
            .state
            .store
            .transactions(csms::store::TransactionFilter {
                charger_id: Some("CP-PY".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .first()
            .is_some_and(|t| t.status == "stopped");
        if stopped && server.state.registry.is_connected("CP-PY") {
            answered = Some(
                server
                    .state
                    .registry
                    .call("CP-PY", "ClearCache", json!({}))
                    .await,
            );
            break;
        }
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "python charger failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        answered.expect("command sent").unwrap(),
        json!({"status": "Accepted"})
    );

    let txs = server
        .state
        .store
        .transactions(csms::store::TransactionFilter {
            charger_id: Some("CP-PY".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(
        (txs[0].status.as_str(), txs[0].energy_wh),
        ("stopped", 10500.0)
    );
    let charger = server.state.store.charger("CP-PY").await.unwrap().unwrap();
    assert_eq!(charger.vendor.as_deref(), Some("PyVendor"));
    server.stop().await;
}
