//! The database failing under a running server: PostgreSQL going down (its
//! connections cut, new ones refused), a full disk under SQLite, a database
//! file that cannot be written. While it lasts every CALL is answered within
//! a few seconds (`InternalError`, so the charger retries), `/health`
//! answers 503 within a second, nothing is acknowledged that is not stored;
//! when it ends, service resumes by itself and the retried messages are
//! stored exactly once.

mod common;

use common::proxy::TcpProxy;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A CALL that must be answered (either way) within a few seconds: the
/// answer frame.
async fn answered_promptly(charger: &mut TestCharger, action: &str, payload: Value) -> Value {
    let asked = Instant::now();
    let frame = charger.call_frame(action, payload).await;
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "{action} answered after {:?}",
        asked.elapsed()
    );
    frame
}

fn meter_values(tx: i64, minute: u32, wh: f64) -> Value {
    json!({"connectorId": 1, "transactionId": tx,
           "meterValue": [meter_sample(&format!("2024-01-15T10:{minute:02}:00Z"), wh, Some(50.0))]})
}

async fn health(server: &TestServer) -> (u16, Duration) {
    let asked = Instant::now();
    let response = http()
        .get(server.http_url("/health"))
        .send()
        .await
        .expect("health answers");
    (response.status().as_u16(), asked.elapsed())
}

/// Waits (bounded) until `/health` says the database is back.
async fn until_healthy(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if health(server).await.0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "service did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `payload` until it is acknowledged (the charger retrying after an
/// InternalError), bounded.
async fn retry_until_acknowledged(charger: &mut TestCharger, action: &str, payload: Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let frame = answered_promptly(charger, action, payload.clone()).await;
        if frame[0] == 3 {
            return;
        }
        assert_eq!(frame[2], "InternalError", "{frame}");
        assert!(Instant::now() < deadline, "{action} never acknowledged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_down_answers_promptly_and_service_resumes() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let target = reqwest::Url::parse(&admin_url).expect("PostgreSQL URL");
    let target_addr = tokio::net::lookup_host((
        target.host_str().unwrap_or("127.0.0.1"),
        target.port().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let mut proxy = TcpProxy::start(target_addr).await;
    let mut db = TestDatabase::new(Backend::Postgres).await;
    // The server reaches its database through the relay.
    let mut through = reqwest::Url::parse(&db.url).unwrap();
    through.set_ip_host(proxy.addr.ip()).unwrap();
    through.set_port(Some(proxy.addr.port())).unwrap();
    db.url = through.to_string();
    let server = TestServer::start_on(db, |_| {}).await;
    server.user_with_tag("driver", "TAG-OUT").await;
    let mut charger = server.booted_charger("CP-PGDOWN").await;
    let start = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-OUT", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}))
        .await;
    let tx = start["transactionId"].as_i64().unwrap();
    charger
        .call("MeterValues", meter_values(tx, 1, 100.0))
        .await;

    proxy.cut().await;
    let during = meter_values(tx, 2, 200.0);
    let frame = answered_promptly(&mut charger, "MeterValues", during.clone()).await;
    assert_eq!(
        (frame[0].as_i64(), frame[2].as_str()),
        (Some(4), Some("InternalError")),
        "{frame}"
    );
    let stop = json!({"transactionId": tx, "meterStop": 300, "timestamp": "2024-01-15T10:03:00Z", "reason": "Local"});
    let frame = answered_promptly(&mut charger, "StopTransaction", stop.clone()).await;
    assert_eq!(frame[2], "InternalError", "{frame}");
    let frame = answered_promptly(&mut charger, "Heartbeat", json!({})).await;
    assert_eq!(frame[2], "InternalError", "{frame}");
    let (status, took) = health(&server).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(1), "/health took {took:?}");

    proxy.restore().await;
    until_healthy(&server).await;
    // The charger retries what was not acknowledged; each is stored once.
    retry_until_acknowledged(&mut charger, "MeterValues", during).await;
    retry_until_acknowledged(&mut charger, "StopTransaction", stop).await;
    let record = server.state.store.transaction(tx).await.unwrap().unwrap();
    assert_eq!(
        (record.status.as_str(), record.energy_wh),
        ("stopped", 300.0)
    );
    let samples = server.state.store.meter_values(tx).await.unwrap();
    assert_eq!(
        samples.len(),
        4,
        "two readings of two values each: {samples:#?}"
    );
    server.stop().await;
}

/// A small filesystem of the test's own (tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it (it needs root, as CI has)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the rest of a filesystem; returns the filler to remove.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_internal_error_and_service_resumes() {
    let disk = SmallDisk::mount("16m");
    let db = TestDatabase::sqlite_at(&disk.path().join("csms.db"));
    let server = TestServer::start_on(db, |_| {}).await;
    server.user_with_tag("driver", "TAG-FULL").await;
    let mut charger = server.booted_charger("CP-FULL").await;
    let start = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-FULL", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}))
        .await;
    let tx = start["transactionId"].as_i64().unwrap();
    charger.call("MeterValues", meter_values(tx, 0, 10.0)).await;
    let filler = fill(disk.path());

    // Readings go on until the database needs room it cannot get.
    let mut acknowledged = 1;
    let mut refused = None;
    for i in 1..3000u32 {
        let payload = json!({"connectorId": 1, "transactionId": tx, "meterValue": [{
            "timestamp": format!("2024-01-15T{:02}:{:02}:{:02}Z", 10 + i / 3600, (i / 60) % 60, i % 60),
            "sampledValue": [{"value": format!("{}", 10 + i), "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                              "context": "Sample.Periodic", "location": "Outlet"}]}]});
        let frame = answered_promptly(&mut charger, "MeterValues", payload.clone()).await;
        if frame[0] == 3 {
            acknowledged += 1;
        } else {
            assert_eq!(frame[2], "InternalError", "{frame}");
            refused = Some(payload);
            break;
        }
    }
    let refused = refused.expect("a full disk refuses a write");
    // Health answers within a second either way: 503 while writes fail,
    // 200 if a small write still finds room in the log file SQLite reuses.
    let (status, took) = health(&server).await;
    assert!(status == 503 || status == 200, "{status}");
    assert!(took < Duration::from_secs(1), "/health took {took:?}");

    std::fs::remove_file(filler).unwrap();
    retry_until_acknowledged(&mut charger, "MeterValues", refused).await;
    acknowledged += 1;
    until_healthy(&server).await;
    // Every acknowledged reading is there, once.
    let stored = server.state.store.meter_values(tx).await.unwrap();
    // The first reading had two values (energy, SoC), the rest one each.
    assert_eq!(stored.len(), acknowledged + 1, "{} stored", stored.len());
    server.stop().await;
}

/// Files made immutable (`chattr +i`: not even root may write them) for as
/// long as this lives.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: &[std::path::PathBuf]) -> Immutable {
        for path in paths {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .expect("chattr runs");
            assert!(status.success(), "chattr +i {}", path.display());
        }
        Immutable(paths.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_file_that_cannot_be_written_answers_internal_error_and_service_resumes() {
    // A directory on the machine's own (ext4) disk, where chattr works.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("csms.db");
    let db = TestDatabase::sqlite_at(&path);
    let server = TestServer::start_on(db, |_| {}).await;
    server.user_with_tag("driver", "TAG-RO").await;
    let mut charger = server.booted_charger("CP-RO").await;
    let start = charger
        .call("StartTransaction", json!({"connectorId": 1, "idTag": "TAG-RO", "meterStart": 0, "timestamp": "2024-01-15T10:00:00Z"}))
        .await;
    let tx = start["transactionId"].as_i64().unwrap();
    charger
        .call("MeterValues", meter_values(tx, 1, 100.0))
        .await;
    server.state.store.flush().await.unwrap();

    let read_only = Immutable::set(&[path.clone(), dir.path().join("csms.db-wal")]);
    let during = meter_values(tx, 2, 200.0);
    let frame = answered_promptly(&mut charger, "MeterValues", during.clone()).await;
    assert_eq!(frame[2], "InternalError", "{frame}");
    let (status, took) = health(&server).await;
    assert_eq!(status, 503);
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
    drop(read_only);

    retry_until_acknowledged(&mut charger, "MeterValues", during).await;
    until_healthy(&server).await;
    assert_eq!(server.state.store.meter_values(tx).await.unwrap().len(), 4);
    server.stop().await;
}
