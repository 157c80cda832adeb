//! The open loop and its knee: MeterValues at a fixed total rate on a
//! schedule, whatever the server does, and the highest rate it sustains
//! with p99 under a limit and nothing failing.
//!
//! Latency is timed from each message's **scheduled** send time, not from
//! when it actually left. A connection keeps one CALL outstanding (OCPP-J),
//! so a slow answer delays the messages scheduled behind it; timing from
//! the actual send would hide exactly that queueing ("coordinated
//! omission") and make an overloaded server look fast. Messages a
//! connection could not send before the step gave up are counted as unsent
//! and their lateness so far enters the histogram as a lower bound.
//!
//! The knee search doubles the rate from a start until a step fails (or a
//! maximum passes), then bisects between the last rate that passed and the
//! first that failed. When the start rate already fails it halves down.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::meter::{Frames, MeterConn, Tally};
use super::report::{OpenLoop, OpenStep};

#[derive(Debug, Clone)]
pub struct KneeConfig {
    pub start_rate: f64,
    /// The search does not go above this rate.
    pub max_rate: f64,
    /// Nor below this one when the start rate fails.
    pub min_rate: f64,
    /// Bisection steps after the doubling.
    pub refine: u32,
    pub step: Duration,
    /// How long after a step's end connections may still send what was
    /// scheduled within it.
    pub drain: Duration,
    /// Pause between steps, so one step's backlog does not start the next.
    pub pause: Duration,
    pub p99_limit_ms: f64,
    pub timeout: Duration,
}

/// Runs one step at `rate` messages per second over all `conns`.
pub async fn step(
    conns: Vec<MeterConn>,
    rate: f64,
    cfg: &KneeConfig,
    frames: &Arc<Frames>,
) -> (Vec<MeterConn>, OpenStep) {
    let connections = conns.len();
    let tally = Arc::new(Tally::default());
    // Each connection sends every `period`; their phases are spread evenly
    // over one period so the total rate is smooth.
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + cfg.step;
    let give_up = end + cfg.drain;
    let mut tasks = Vec::with_capacity(connections);
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (tally, frames) = (tally.clone(), frames.clone());
        let timeout = cfg.timeout;
        let first = start + period.mul_f64(i as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let scheduled = |k: u64| first + period.mul_f64(k as f64);
            let mut k = 0u64;
            let mut open = true;
            while scheduled(k) < end {
                let now = Instant::now();
                if !open || now >= give_up {
                    // Never sent: late by at least this much already.
                    Tally::add(&tally.unsent);
                    tally.record_latency(now.saturating_duration_since(scheduled(k)));
                    k += 1;
                    continue;
                }
                tokio::time::sleep_until(scheduled(k)).await;
                Tally::add(&tally.sent);
                match conn.send_meter_values(timeout, &frames).await {
                    Ok(outcome) => tally.record(&outcome, scheduled(k).elapsed()),
                    Err(e) => {
                        tracing::debug!("open loop: connection lost: {e:#}");
                        Tally::add(&tally.disconnects);
                        open = false;
                    }
                }
                k += 1;
            }
            (open.then_some(conn), Instant::now())
        }));
    }
    let mut still_open = Vec::with_capacity(connections);
    let mut last = start;
    for task in tasks {
        if let Ok((conn, finished)) = task.await {
            still_open.extend(conn);
            last = last.max(finished);
        }
    }
    let answered = Tally::get(&tally.answered);
    let latency = tally.latency();
    let (errors, timeouts, disconnects, unsent) = (
        Tally::get(&tally.errors),
        Tally::get(&tally.timeouts),
        Tally::get(&tally.disconnects),
        Tally::get(&tally.unsent),
    );
    let passed = answered > 0
        && errors == 0
        && timeouts == 0
        && disconnects == 0
        && unsent == 0
        && latency.p99_ms < cfg.p99_limit_ms;
    let elapsed = last.saturating_duration_since(start).max(cfg.step);
    let report = OpenStep {
        rate,
        connections,
        sent: Tally::get(&tally.sent),
        answered,
        errors,
        timeouts,
        disconnects,
        unsent,
        achieved_msg_per_s: answered as f64 / elapsed.as_secs_f64(),
        latency,
        passed,
    };
    (still_open, report)
}

/// Rounds a bisection midpoint to a figure worth printing.
fn round_rate(rate: f64) -> f64 {
    let unit = if rate >= 1000.0 {
        50.0
    } else if rate >= 100.0 {
        10.0
    } else {
        1.0
    };
    (rate / unit).round() * unit
}

/// A step after a pause (the first one runs at once), logged as it ends.
async fn paced_step(
    conns: Vec<MeterConn>,
    rate: f64,
    cfg: &KneeConfig,
    frames: &Arc<Frames>,
    first: bool,
) -> (Vec<MeterConn>, OpenStep) {
    if !first {
        tokio::time::sleep(cfg.pause).await;
    }
    let (conns, s) = step(conns, rate, cfg, frames).await;
    tracing::info!(
        rate,
        achieved = s.achieved_msg_per_s.round(),
        p99_ms = s.latency.p99_ms,
        errors = s.errors,
        timeouts = s.timeouts,
        unsent = s.unsent,
        passed = s.passed,
        "open-loop step"
    );
    (conns, s)
}

/// Searches the knee; returns the connections still open and the result.
pub async fn find_knee(
    mut conns: Vec<MeterConn>,
    connect_failures: usize,
    cfg: &KneeConfig,
    frames: &Arc<Frames>,
) -> (Vec<MeterConn>, OpenLoop) {
    let connections = conns.len();
    let mut steps: Vec<OpenStep> = Vec::new();
    // The highest rate that passed and the lowest that failed.
    let mut passed: Option<f64> = None;
    let mut failed: Option<f64> = None;
    let mut rate = cfg.start_rate;
    while !conns.is_empty() {
        let (rest, s) = paced_step(conns, rate, cfg, frames, steps.is_empty()).await;
        conns = rest;
        if s.passed {
            passed = Some(rate);
        } else {
            failed = Some(rate);
        }
        steps.push(s);
        match (passed, failed) {
            // Every step passed so far: double.
            (Some(p), None) if p < cfg.max_rate => rate = (p * 2.0).min(cfg.max_rate),
            // Every step failed so far: halve.
            (None, Some(f)) if f / 2.0 >= cfg.min_rate => rate = f / 2.0,
            // At a limit, or the knee lies between the two.
            _ => break,
        }
    }
    if let (Some(mut lo), Some(mut hi)) = (passed, failed) {
        for _ in 0..cfg.refine {
            let mid = round_rate((lo + hi) / 2.0);
            if mid <= lo || mid >= hi || conns.is_empty() {
                break;
            }
            let (rest, s) = paced_step(conns, mid, cfg, frames, false).await;
            conns = rest;
            if s.passed {
                lo = mid;
            } else {
                hi = mid;
            }
            steps.push(s);
        }
        passed = Some(lo);
    }
    let report = OpenLoop {
        connections,
        connect_failures,
        step_s: cfg.step.as_secs_f64(),
        p99_limit_ms: cfg.p99_limit_ms,
        knee_msg_per_s: passed.unwrap_or(0.0),
        knee_is_lower_bound: failed.is_none() && passed.is_some(),
        answered: steps.iter().map(|s| s.answered).sum(),
        steps,
    };
    (conns, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_are_round_figures() {
        assert_eq!(round_rate(750.0), 750.0);
        assert_eq!(round_rate(1_234.0), 1_250.0);
        assert_eq!(round_rate(12_345.0), 12_350.0);
        assert_eq!(round_rate(87.4), 87.0);
    }
}
