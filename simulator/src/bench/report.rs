//! What a benchmark run found, as JSON (`--json PATH`) and as a Markdown
//! table putting the csms server and the trivial server side by side.
//!
//! Every figure is optional because phases can be left out; a figure that
//! does not apply to a server (what it stored, for the trivial server,
//! which stores nothing) is absent from its side.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::Latency;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub settings: Settings,
    pub csms: Option<ServerReport>,
    pub trivial: Option<ServerReport>,
}

/// How the run was sized, so a figure can be read with what produced it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub quick: bool,
    pub phases: Vec<String>,
    /// `sqlite` or `postgres`: the csms server's database.
    pub database: String,
    pub closed_connections: usize,
    pub closed_duration_s: f64,
    pub open_connections: usize,
    pub open_step_s: f64,
    pub open_start_rate: f64,
    pub open_max_rate: f64,
    pub open_refine_steps: u32,
    pub p99_limit_ms: f64,
    pub chargers: usize,
    pub heartbeat_interval_s: u64,
    pub call_timeout_s: f64,
    pub source_addrs: usize,
    /// Cores this machine has: the server and the load generator share them.
    pub cpus: usize,
    pub open_files_limit: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerReport {
    /// `csms` or `trivial`.
    pub server: String,
    /// The csms server's database (`sqlite`, `postgres`); none for the trivial server.
    pub database: Option<String>,
    /// The machine's 1-minute load average just before this server was
    /// measured: above zero, something else was using the cores too.
    pub load_average_before: Option<f64>,
    pub closed_loop: Option<ClosedLoop>,
    pub open_loop: Option<OpenLoop>,
    pub memory: Option<Memory>,
    pub shutdown: Option<Shutdown>,
    pub restart: Option<Restart>,
    /// Stored against acknowledged, logged against exchanged (csms only).
    pub ingest: Option<Ingest>,
}

/// C connections each sending its next MeterValues when the previous one is
/// answered, for D seconds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosedLoop {
    pub connections: usize,
    pub connect_failures: usize,
    pub duration_s: f64,
    pub sent: u64,
    /// MeterValues answered with a CALLRESULT.
    pub answered: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub disconnects: u64,
    pub error_codes: BTreeMap<String, u64>,
    /// Answered per second of the phase.
    pub msg_per_s: f64,
    /// From sending a MeterValues to its answer.
    pub latency: Latency,
}

/// One open-loop step: a fixed total rate, latency from the scheduled send time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenStep {
    /// The rate asked for, over all connections.
    pub rate: f64,
    pub connections: usize,
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub disconnects: u64,
    /// Scheduled within the step but not sent before it gave up (their
    /// lateness so far is in the latency figures, as a lower bound).
    pub unsent: u64,
    /// Answered per second, from the step's start until its last answer.
    pub achieved_msg_per_s: f64,
    /// From the scheduled send time to the answer.
    pub latency: Latency,
    /// p99 under the limit, and no error, timeout, lost connection or unsent message.
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenLoop {
    pub connections: usize,
    pub connect_failures: usize,
    pub step_s: f64,
    pub p99_limit_ms: f64,
    /// The highest rate that passed (0 when none did).
    pub knee_msg_per_s: f64,
    /// The highest rate tried passed: the knee is at least `knee_msg_per_s`.
    pub knee_is_lower_bound: bool,
    /// MeterValues answered with a CALLRESULT over all steps.
    pub answered: u64,
    /// In the order they ran.
    pub steps: Vec<OpenStep>,
}

/// N chargers connected, booted and heartbeating; the server's resident memory.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub chargers: usize,
    /// Chargers connected and Accepted when memory was read.
    pub accepted: u64,
    /// From the first connection until all were connected and Accepted.
    pub connect_s: f64,
    pub rss_before_kib: u64,
    pub rss_with_chargers_kib: u64,
    /// (RSS with chargers − RSS before) / chargers.
    pub kib_per_charger: f64,
    pub heartbeat_interval_s: u64,
    /// Heartbeats while the chargers were idle (each sent at least one).
    pub heartbeats_sent: u64,
    pub heartbeats_answered: u64,
    pub heartbeat_errors: u64,
    pub heartbeat_timeouts: u64,
}

/// SIGTERM with N chargers connected.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shutdown {
    pub chargers_connected: u64,
    /// From SIGTERM until the process exited.
    pub seconds: f64,
    /// It did not exit within the limit and was killed.
    pub killed: bool,
    pub exit_code: Option<i32>,
}

/// The server restarted on the same database; every charger reconnects (with
/// jittered exponential backoff) and boots again.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    pub chargers: usize,
    /// From starting the process until `/health` answered.
    pub health_after_s: f64,
    /// From `/health` answering until all chargers were connected and
    /// Accepted again; none if they were not within the limit.
    pub all_accepted_after_s: Option<f64>,
    /// Chargers connected and Accepted at the end of the phase.
    pub accepted: u64,
    pub boots: u64,
    /// BootNotifications answered with anything but Accepted, or not at all.
    pub boot_errors: u64,
    pub connect_failures: u64,
    /// BootNotification round trips after the restart.
    pub boot_latency: Latency,
}

/// One comparison of what the server acknowledged with what it stored, and
/// of the frames exchanged with those in its message log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestCheck {
    /// MeterValues answered with a CALLRESULT.
    pub acknowledged_meter_values: u64,
    /// Those × 8.
    pub acknowledged_sampled_values: u64,
    /// Distinct stored readings (the server's `meterValueMessages`).
    pub stored_meter_value_messages: i64,
    pub stored_sampled_values: i64,
    pub stored_equals_acknowledged: bool,
    /// CALLs the load generator sent plus the answers it received.
    pub frames_exchanged: u64,
    pub frames_logged: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingest {
    /// The idle chargers' phases (memory, shutdown, restart): boots and
    /// heartbeats, no MeterValues.
    pub idle_chargers: Option<IngestCheck>,
    pub closed_loop: Option<IngestCheck>,
    pub open_loop: Option<IngestCheck>,
    /// The whole run: every phase's frames (boots, heartbeats too), every
    /// MeterValues.
    pub total: IngestCheck,
}

// ---------------------------------------------------------------- the table

/// A number with thousands separators and `decimals` decimals.
fn num(x: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Milliseconds with precision that suits their size.
fn ms(x: f64) -> String {
    if x < 10.0 {
        num(x, 2)
    } else if x < 100.0 {
        num(x, 1)
    } else {
        num(x, 0)
    }
}

fn ratio(csms: Option<f64>, trivial: Option<f64>) -> String {
    match (csms, trivial) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            if r >= 10.0 {
                format!("{}×", num(r, 0))
            } else if r >= 1.0 {
                format!("{r:.1}×")
            } else {
                format!("{r:.3}×")
            }
        }
        _ => "–".into(),
    }
}

struct Row {
    what: String,
    csms: String,
    trivial: String,
    ratio: String,
}

/// A row: each server's cell and, where the row has one headline number
/// (the first of its cell), the ratio of the two.
fn row(
    what: String,
    csms: Option<&ServerReport>,
    trivial: Option<&ServerReport>,
    cell: impl Fn(&ServerReport) -> Option<(String, Option<f64>)>,
) -> Row {
    let a = csms.and_then(&cell);
    let b = trivial.and_then(&cell);
    let headline = |c: &Option<(String, Option<f64>)>| c.as_ref().and_then(|(_, x)| *x);
    Row {
        what,
        ratio: ratio(headline(&a), headline(&b)),
        csms: a.map(|(text, _)| text).unwrap_or_else(|| "–".into()),
        trivial: b.map(|(text, _)| text).unwrap_or_else(|| "–".into()),
    }
}

/// A cell that is one number.
fn figure(x: f64, show: impl Fn(f64) -> String) -> (String, Option<f64>) {
    (show(x), Some(x))
}

/// A cell of text without a headline number.
fn text(s: String) -> (String, Option<f64>) {
    (s, None)
}

fn percentiles(l: &Latency) -> String {
    format!("{} / {} / {}", ms(l.p50_ms), ms(l.p99_ms), ms(l.p999_ms))
}

fn ingest_cell(check: &IngestCheck) -> String {
    let verdict = if check.stored_equals_acknowledged {
        "equal"
    } else {
        "DIFFERENT"
    };
    format!(
        "{} stored / {} acknowledged: {verdict}",
        num(check.stored_sampled_values as f64, 0),
        num(check.acknowledged_sampled_values as f64, 0)
    )
}

fn log_cell(check: &IngestCheck) -> String {
    let missing = check.frames_exchanged as i64 - check.frames_logged;
    let share = if check.frames_exchanged > 0 {
        100.0 * missing as f64 / check.frames_exchanged as f64
    } else {
        0.0
    };
    format!(
        "{} logged / {} exchanged ({} missing, {share:.1} %)",
        num(check.frames_logged as f64, 0),
        num(check.frames_exchanged as f64, 0),
        num(missing as f64, 0)
    )
}

impl BenchReport {
    /// The side-by-side table, in Markdown.
    pub fn to_table(&self) -> String {
        let (c, t) = (self.csms.as_ref(), self.trivial.as_ref());
        let s = &self.settings;
        let ran = |phase: fn(&ServerReport) -> bool| c.or(t).is_some_and(phase);
        let mut rows = Vec::new();
        if ran(|r| r.closed_loop.is_some()) {
            rows.push(row(
                format!(
                    "closed loop, {} connections: msg/s",
                    num(s.closed_connections as f64, 0)
                ),
                c,
                t,
                |r| {
                    r.closed_loop
                        .as_ref()
                        .map(|l| figure(l.msg_per_s, |x| num(x, 0)))
                },
            ));
            rows.push(row(
                "closed loop p50 / p99 / p99.9 ms (ratio of p99)".into(),
                c,
                t,
                |r| {
                    r.closed_loop
                        .as_ref()
                        .map(|l| (percentiles(&l.latency), Some(l.latency.p99_ms)))
                },
            ));
            rows.push(row(
                "closed loop errors / timeouts / lost connections".into(),
                c,
                t,
                |r| {
                    r.closed_loop.as_ref().map(|l| {
                        text(format!(
                            "{} / {} / {}",
                            l.errors,
                            l.timeouts,
                            l.disconnects + l.connect_failures as u64
                        ))
                    })
                },
            ));
        }
        if ran(|r| r.open_loop.is_some()) {
            rows.push(row(
                format!(
                    "open loop, {} connections: highest msg/s with p99 < {} ms and no errors",
                    num(s.open_connections as f64, 0),
                    s.p99_limit_ms
                ),
                c,
                t,
                |r| {
                    r.open_loop.as_ref().map(|l| {
                        let at_least = if l.knee_is_lower_bound { "≥ " } else { "" };
                        (
                            format!("{at_least}{}", num(l.knee_msg_per_s, 0)),
                            Some(l.knee_msg_per_s),
                        )
                    })
                },
            ));
            rows.push(row(
                "open loop at that rate: p50 / p99 / p99.9 ms".into(),
                c,
                t,
                |r| {
                    let l = r.open_loop.as_ref()?;
                    let knee = l
                        .steps
                        .iter()
                        .rfind(|s| s.passed && s.rate == l.knee_msg_per_s)?;
                    Some(text(percentiles(&knee.latency)))
                },
            ));
        }
        if ran(|r| r.memory.is_some()) {
            rows.push(row(
                format!(
                    "memory per idle charger, {} chargers: KiB",
                    num(s.chargers as f64, 0)
                ),
                c,
                t,
                |r| {
                    r.memory
                        .as_ref()
                        .map(|m| figure(m.kib_per_charger, |x| num(x, 1)))
                },
            ));
            rows.push(row(
                "chargers accepted; heartbeats answered / sent".into(),
                c,
                t,
                |r| {
                    r.memory.as_ref().map(|m| {
                        text(format!(
                            "{}; {} / {}",
                            num(m.accepted as f64, 0),
                            num(m.heartbeats_answered as f64, 0),
                            num(m.heartbeats_sent as f64, 0)
                        ))
                    })
                },
            ));
        }
        if ran(|r| r.shutdown.is_some()) {
            rows.push(row(
                format!("shutdown with {} connected: s", num(s.chargers as f64, 0)),
                c,
                t,
                |r| {
                    r.shutdown.as_ref().map(|x| {
                        let killed = if x.killed { " (killed)" } else { "" };
                        (format!("{}{killed}", num(x.seconds, 2)), Some(x.seconds))
                    })
                },
            ));
        }
        if ran(|r| r.restart.is_some()) {
            rows.push(row(
                format!(
                    "restart: all {} accepted again, s after /health",
                    num(s.chargers as f64, 0)
                ),
                c,
                t,
                |r| {
                    r.restart.as_ref().map(|x| match x.all_accepted_after_s {
                        Some(secs) => figure(secs, |x| num(x, 2)),
                        None => text(format!("not all within the limit ({} back)", x.accepted)),
                    })
                },
            ));
            rows.push(row(
                "restart: BootNotification p50 / p99 ms (ratio of p99)".into(),
                c,
                t,
                |r| {
                    r.restart.as_ref().map(|x| {
                        (
                            format!(
                                "{} / {}",
                                ms(x.boot_latency.p50_ms),
                                ms(x.boot_latency.p99_ms)
                            ),
                            Some(x.boot_latency.p99_ms),
                        )
                    })
                },
            ));
        }
        rows.push(row(
            "machine load average (1 min) before the server's run".into(),
            c,
            t,
            |r| r.load_average_before.map(|l| text(format!("{l:.2}"))),
        ));
        if let Some(ingest) = c.and_then(|r| r.ingest.as_ref()) {
            for (what, check) in [
                ("closed loop", &ingest.closed_loop),
                ("open loop", &ingest.open_loop),
            ] {
                if let Some(check) = check {
                    rows.push(row(
                        format!("{what}: sampled values stored = acknowledged"),
                        c,
                        None,
                        |_| Some(text(ingest_cell(check))),
                    ));
                }
            }
            for (what, check) in [
                (
                    "idle chargers, shutdown, restart",
                    ingest.idle_chargers.as_ref(),
                ),
                ("closed loop", ingest.closed_loop.as_ref()),
                ("open loop", ingest.open_loop.as_ref()),
                ("whole run", Some(&ingest.total)),
            ] {
                if let Some(check) = check {
                    rows.push(row(
                        format!("message log, {what}: frames logged / exchanged"),
                        c,
                        None,
                        |_| Some(text(log_cell(check))),
                    ));
                }
            }
        }
        let csms = match c.and_then(|r| r.database.as_deref()) {
            Some(database) => format!("csms ({database})"),
            None => "csms".into(),
        };
        let mut out =
            format!("| measure | {csms} | trivial | csms/trivial |\n| --- | --- | --- | --- |\n");
        for r in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.what, r.csms, r.trivial, r.ratio
            ));
        }
        out
    }

    /// The open-loop steps of each server, one line each.
    pub fn steps_table(&self) -> String {
        let mut out = String::new();
        for r in [&self.csms, &self.trivial].into_iter().flatten() {
            let Some(l) = &r.open_loop else { continue };
            out.push_str(&format!(
                "\nopen-loop steps, {} ({} connections, {} s each):\n\n",
                r.server, l.connections, l.step_s
            ));
            out.push_str("| rate msg/s | achieved | p50 ms | p99 ms | p99.9 ms | errors | timeouts | unsent | passed |\n");
            out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
            for s in &l.steps {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    num(s.rate, 0),
                    num(s.achieved_msg_per_s, 0),
                    ms(s.latency.p50_ms),
                    ms(s.latency.p99_ms),
                    ms(s.latency.p999_ms),
                    s.errors,
                    s.timeouts,
                    s.unsent,
                    if s.passed { "yes" } else { "no" }
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_ratios_readable() {
        assert_eq!(num(1234567.0, 0), "1,234,567");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(16.125, 1), "16.1");
        assert_eq!(num(-1234.5, 1), "-1,234.5");
        assert_eq!(ratio(Some(2600.0), Some(70000.0)), "0.037×");
        assert_eq!(ratio(Some(110.0), Some(7.0)), "16×");
        assert_eq!(ratio(Some(1.0), None), "–");
        assert_eq!(ms(2.437), "2.44");
        assert_eq!(ms(113.4), "113");
    }
}
