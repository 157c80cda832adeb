//! What a run observed: live counters every charger updates, and the record of
//! every finished session, so a test can compare them with the server's records.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// One transaction that the server acknowledged as stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub charger_id: String,
    pub connector_id: u32,
    /// As the server assigned it in the StartTransaction answer (-1 if it never did).
    pub transaction_id: i32,
    pub id_tag: String,
    pub meter_start: i64,
    pub meter_stop: i64,
    /// `meterStop - meterStart`: what the server should compute for this session.
    pub energy_wh: i64,
    /// Energy the vehicle really received; differs from `energy_wh` only when a
    /// fault (meter reset) broke the register.
    pub delivered_wh: i64,
    /// Charger timestamps (simulated clock, including any skew), RFC 3339.
    pub start_time: String,
    pub stop_time: String,
    pub stop_reason: String,
    pub soc_start: Option<f64>,
    pub soc_end: Option<f64>,
    /// Faults injected during this session (`outage`, `lost-answer`, `meter-reset`, ...).
    pub faults: Vec<String>,
}

/// The answer the server gave to one malformed frame sent on purpose.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub charger_id: String,
    pub sent: String,
    /// The CALLERROR code received, `result` for a CALLRESULT, or `none` if nothing came back.
    pub answer: String,
}

/// Counters shared by every charger of a run, cheap enough to bump on every frame.
#[derive(Debug, Default)]
pub struct Stats {
    pub connected: AtomicI64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub calls_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub server_calls: AtomicU64,
    pub call_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub active_sessions: AtomicI64,
    pub sessions_started: AtomicU64,
    pub sessions_finished: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            connects: g(&self.connects),
            connect_failures: g(&self.connect_failures),
            disconnects: g(&self.disconnects),
            calls_sent: g(&self.calls_sent),
            frames_received: g(&self.frames_received),
            server_calls: g(&self.server_calls),
            call_errors: g(&self.call_errors),
            timeouts: g(&self.timeouts),
            active_sessions: self.active_sessions.load(Ordering::Relaxed),
            sessions_started: g(&self.sessions_started),
            sessions_finished: g(&self.sessions_finished),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub connected: i64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub calls_sent: u64,
    pub frames_received: u64,
    pub server_calls: u64,
    pub call_errors: u64,
    pub timeouts: u64,
    pub active_sessions: i64,
    pub sessions_started: u64,
    pub sessions_finished: u64,
}

impl StatsSnapshot {
    /// The progress line printed while a run goes on.
    pub fn progress_line(&self, previous: &StatsSnapshot, seconds: f64) -> String {
        let rate = (self.calls_sent + self.frames_received)
            .saturating_sub(previous.calls_sent + previous.frames_received)
            as f64
            / seconds.max(1e-9);
        format!(
            "connected {} | sessions active {} finished {} | {:.0} msg/s | errors {} timeouts {} connect-failures {}",
            self.connected,
            self.active_sessions,
            self.sessions_finished,
            rate,
            self.call_errors,
            self.timeouts,
            self.connect_failures
        )
    }
}

/// Where chargers report to. One per run, shared by all its chargers.
#[derive(Debug, Default)]
pub struct Recorder {
    pub stats: Stats,
    sessions: Mutex<Vec<SessionRecord>>,
    probes: Mutex<Vec<ProbeResult>>,
}

impl Recorder {
    pub fn record_session(&self, s: SessionRecord) {
        self.stats.sessions_finished.fetch_add(1, Ordering::Relaxed);
        // A std Mutex: held for a push only, never across an await.
        self.sessions.lock().unwrap().push(s);
    }

    pub fn record_probe(&self, p: ProbeResult) {
        self.probes.lock().unwrap().push(p);
    }

    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.sessions.lock().unwrap().clone()
    }

    pub fn probes(&self) -> Vec<ProbeResult> {
        self.probes.lock().unwrap().clone()
    }

    /// The final summary of a run.
    pub fn summary(&self, elapsed_s: f64) -> Summary {
        let mut sessions = self.sessions();
        sessions.sort_by(|a, b| {
            (a.charger_id.as_str(), a.connector_id, a.start_time.as_str()).cmp(&(
                b.charger_id.as_str(),
                b.connector_id,
                b.start_time.as_str(),
            ))
        });
        let total_energy_wh = sessions.iter().map(|s| s.energy_wh).sum();
        Summary {
            elapsed_s,
            stats: self.stats.snapshot(),
            total_energy_wh,
            sessions,
            probes: self.probes(),
        }
    }
}

/// The result of a run (one charger, a scenario or a fleet), as text or JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub elapsed_s: f64,
    pub stats: StatsSnapshot,
    pub total_energy_wh: i64,
    pub sessions: Vec<SessionRecord>,
    pub probes: Vec<ProbeResult>,
}

impl Summary {
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ran {:.1} s: {} connects ({} failed, {} dropped), {} calls sent, {} frames received, {} server commands, {} errors, {} timeouts",
            self.elapsed_s, s.connects, s.connect_failures, s.disconnects, s.calls_sent, s.frames_received,
            s.server_calls, s.call_errors, s.timeouts
        );
        let _ = writeln!(
            out,
            "{} sessions finished, {} Wh in total",
            self.sessions.len(),
            self.total_energy_wh
        );
        if !self.sessions.is_empty() {
            let _ = writeln!(
                out,
                "{:<20} {:>4} {:>10} {:>12} {:>12} {:>9}  {:<14} faults",
                "charger", "conn", "txId", "meterStart", "meterStop", "energyWh", "reason"
            );
            for r in &self.sessions {
                let _ = writeln!(
                    out,
                    "{:<20} {:>4} {:>10} {:>12} {:>12} {:>9}  {:<14} {}",
                    r.charger_id,
                    r.connector_id,
                    r.transaction_id,
                    r.meter_start,
                    r.meter_stop,
                    r.energy_wh,
                    r.stop_reason,
                    r.faults.join(",")
                );
            }
        }
        for p in &self.probes {
            let _ = writeln!(out, "probe {} -> {}", p.sent, p.answer);
        }
        out
    }
}
