//! The closed loop: every connection sends its next MeterValues as soon as
//! the previous one is answered (one outstanding CALL, as OCPP-J requires),
//! for a fixed time. It measures how many messages a server turns around
//! when it sets the pace itself; the latencies are those of a saturated
//! server, queueing included.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::meter::{Frames, MeterConn, Tally};
use super::report::ClosedLoop;

/// Runs the closed loop on `conns` for `duration`; returns the connections
/// still open and what happened.
pub async fn run(
    conns: Vec<MeterConn>,
    connect_failures: usize,
    duration: Duration,
    timeout: Duration,
    frames: &Arc<Frames>,
) -> (Vec<MeterConn>, ClosedLoop) {
    let connections = conns.len();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::with_capacity(connections);
    for mut conn in conns {
        let (tally, frames) = (tally.clone(), frames.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let sent_at = Instant::now();
                Tally::add(&tally.sent);
                match conn.send_meter_values(timeout, &frames).await {
                    Ok(outcome) => tally.record(&outcome, sent_at.elapsed()),
                    Err(e) => {
                        tracing::debug!("closed loop: connection lost: {e:#}");
                        Tally::add(&tally.disconnects);
                        return None;
                    }
                }
            }
            Some(conn)
        }));
    }
    let mut open = Vec::with_capacity(connections);
    for task in tasks {
        if let Ok(Some(conn)) = task.await {
            open.push(conn);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let answered = Tally::get(&tally.answered);
    let report = ClosedLoop {
        connections,
        connect_failures,
        duration_s: elapsed,
        sent: Tally::get(&tally.sent),
        answered,
        errors: Tally::get(&tally.errors),
        timeouts: Tally::get(&tally.timeouts),
        disconnects: Tally::get(&tally.disconnects),
        error_codes: tally.error_codes.lock().unwrap().clone(),
        msg_per_s: answered as f64 / elapsed.max(1e-3),
        latency: tally.latency(),
    };
    (open, report)
}
