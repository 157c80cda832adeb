//! Meter readings: what a sampled value means (energy register, power, SoC),
//! folding new readings into a transaction's running figures, and knowing
//! which sampled values are stored already so each is kept once.
//!
//! Pure code, no I/O: the figures' edges (rounding, kWh, readings after the
//! stop, out-of-order arrival) are unit-tested here.

use crate::store::{Sample, TransactionRecord};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// An energy register may read up to this much below the one before without
/// it being a meter going backwards: chargers round (98.26 Wh in MeterValues,
/// `98` as the StopTransaction value), and a drop under the register's
/// resolution is rounding, not a reset.
pub const REGISTER_RESOLUTION_WH: f64 = 1.0;

/// How far ahead of the server's clock a charger's timestamp may be before it
/// is flagged (clocks drift; minutes ahead is a broken clock).
pub const FUTURE_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// A value the whole meter reads (not one phase, not the EV side).
fn whole_meter(s: &Sample) -> bool {
    s.phase.is_none() && matches!(s.location.as_deref(), None | Some("Outlet"))
}

fn number(s: &Sample) -> Option<f64> {
    s.value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Energy registers in Wh: `kWh` values are scaled, a missing unit is Wh.
/// Signed meter data is not a number this server can read.
pub fn register_wh(s: &Sample) -> Option<f64> {
    if s.format.as_deref() == Some("SignedData") {
        return None;
    }
    let value = number(s)?;
    Some(match s.unit.as_deref() {
        Some("kWh") => value * 1000.0,
        _ => value,
    })
}

pub fn power_w(s: &Sample) -> Option<f64> {
    let value = number(s)?;
    Some(match s.unit.as_deref() {
        Some("kW") => value * 1000.0,
        _ => value,
    })
}

/// What makes two sampled values the same reading: the connector, the
/// moment, and what was measured where, with which value. `context` is left
/// out on purpose: StopTransaction's transactionData repeats periodic
/// samples under other contexts.
pub fn fingerprint(connector_id: i64, s: &Sample) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    connector_id.hash(&mut h);
    s.sampled_at.timestamp_millis().hash(&mut h);
    s.measurand.hash(&mut h);
    s.phase.hash(&mut h);
    s.location.hash(&mut h);
    s.unit.hash(&mut h);
    s.value.hash(&mut h);
    h.finish()
}

/// The fingerprints of the latest stored sampled values of one transaction
/// (or of a charger's readings outside transactions): enough to recognise a
/// retransmitted MeterValues without reading the database, bounded so a
/// long transaction costs no more memory than a short one. Older values are
/// looked up in the database when a message repeats them.
#[derive(Debug, Clone)]
pub struct Window {
    by_time: BTreeMap<i64, Vec<u64>>,
    len: usize,
    /// Every stored value sampled at or after this (ms) is in the window.
    complete_from: i64,
}

/// Sampled values a window remembers.
const WINDOW_VALUES: usize = 128;

impl Window {
    /// A window of something with nothing stored yet.
    pub fn empty() -> Self {
        Window {
            by_time: BTreeMap::new(),
            len: 0,
            complete_from: i64::MIN,
        }
    }

    /// A window from the newest stored values; `complete` when they are all
    /// there are.
    pub fn from_stored<'a>(
        values: impl IntoIterator<Item = (i64, &'a Sample)>,
        complete: bool,
    ) -> Self {
        let mut w = Window::empty();
        let mut oldest = i64::MAX;
        for (connector, s) in values {
            oldest = oldest.min(s.sampled_at.timestamp_millis());
            w.remember(fingerprint(connector, s), s.sampled_at.timestamp_millis());
        }
        if !complete && oldest != i64::MAX {
            // Values at the oldest moment may be only partly loaded.
            w.forget_before(oldest.saturating_add(1));
        }
        w
    }

    /// Whether the window can answer for a value sampled at `at_ms`.
    pub fn covers(&self, at_ms: i64) -> bool {
        at_ms >= self.complete_from
    }

    pub fn contains(&self, at_ms: i64, fp: u64) -> bool {
        self.by_time.get(&at_ms).is_some_and(|v| v.contains(&fp))
    }

    /// Notes a value as stored.
    pub fn remember(&mut self, fp: u64, at_ms: i64) {
        if !self.covers(at_ms) {
            return;
        }
        self.by_time.entry(at_ms).or_default().push(fp);
        self.len += 1;
        while self.len > WINDOW_VALUES {
            let Some((oldest, values)) = self.by_time.pop_first() else {
                break;
            };
            self.len -= values.len();
            self.complete_from = oldest.saturating_add(1);
        }
    }

    fn forget_before(&mut self, at_ms: i64) {
        let kept = self.by_time.split_off(&at_ms);
        self.len = kept.values().map(Vec::len).sum();
        self.by_time = kept;
        self.complete_from = self.complete_from.max(at_ms);
    }
}

/// An anomaly as the engine finds it: kind and detail.
pub type Finding = (&'static str, Value);

/// A charger timestamp as the session clock may use it: never later than the
/// moment the message arrived, so a charger clock days ahead cannot stretch
/// a session. Flagged when it is more than a few minutes ahead.
pub fn clamp_to_arrival(
    at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    findings: &mut Vec<Finding>,
) -> DateTime<Utc> {
    if at > received_at + FUTURE_TOLERANCE {
        findings.push((
            "timestamp_in_future",
            json!({"timestamp": at, "receivedAt": received_at}),
        ));
    }
    at.min(received_at)
}

/// Folds new sampled values of a running transaction into its figures, by
/// the charger's timestamps rather than arrival order: the latest energy
/// register, SoC and power. Returns what looks wrong. Energy is the latest
/// register − meterStart, never negative.
pub fn fold(
    tx: &mut TransactionRecord,
    samples: &[&Sample],
    received_at: DateTime<Utc>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut ordered: Vec<&Sample> = samples.to_vec();
    ordered.sort_by_key(|s| s.sampled_at);
    let mut flagged_future = false;
    for s in ordered {
        // A reading from the future counts as taken when it arrived.
        let at = if s.sampled_at > received_at {
            if !flagged_future && s.sampled_at > received_at + FUTURE_TOLERANCE {
                flagged_future = true;
                findings.push((
                    "timestamp_in_future",
                    json!({"timestamp": s.sampled_at, "receivedAt": received_at}),
                ));
            }
            received_at
        } else {
            s.sampled_at
        };
        match s.measurand.as_str() {
            "Energy.Active.Import.Register" if whole_meter(s) => match register_wh(s) {
                Some(wh) => {
                    if tx.last_register_at.is_none_or(|last| at >= last) {
                        if let Some(prev) = tx
                            .last_register_wh
                            .filter(|prev| prev - wh >= REGISTER_RESOLUTION_WH)
                        {
                            findings.push((
                                "register_went_backwards",
                                json!({"previousWh": prev, "valueWh": wh, "sampledAt": s.sampled_at}),
                            ));
                        }
                        if tx.meter_start as f64 - wh >= REGISTER_RESOLUTION_WH {
                            findings.push((
                                "register_below_meter_start",
                                json!({"meterStart": tx.meter_start, "valueWh": wh, "sampledAt": s.sampled_at}),
                            ));
                        }
                        tx.last_register_wh = Some(wh);
                        tx.last_register_at = Some(at);
                    }
                }
                None => findings.push((
                    "unreadable_register",
                    json!({"value": s.value, "format": s.format, "unit": s.unit}),
                )),
            },
            "SoC" => {
                if let Some(soc) = number(s).filter(|v| (0.0..=100.0).contains(v)) {
                    if tx.soc_start.is_none() {
                        tx.soc_start = Some(soc);
                    }
                    if tx.soc_last_at.is_none_or(|last| at >= last) {
                        tx.soc_last = Some(soc);
                        tx.soc_last_at = Some(at);
                    }
                }
            }
            "Power.Active.Import" if whole_meter(s) => {
                if let Some(w) = power_w(s) {
                    tx.power_w_last = Some(w);
                }
            }
            _ => {}
        }
    }
    tx.energy_wh = running_energy_wh(tx);
    findings
}

/// Energy of a transaction still running: the latest register − meterStart.
pub fn running_energy_wh(tx: &TransactionRecord) -> f64 {
    tx.last_register_wh
        .map(|r| (r - tx.meter_start as f64).max(0.0))
        .unwrap_or(0.0)
}

/// Energy of a stopped transaction: the charger's own final figure.
pub fn final_energy_wh(meter_start: i64, meter_stop: i64) -> f64 {
    (meter_stop - meter_start).max(0) as f64
}

/// One point of a transaction's chart: energy delivered so far (the whole
/// meter's register − meterStart), power (the whole meter's, or its phases
/// summed when only those were sampled) and battery level, at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeterPoint {
    pub at: DateTime<Utc>,
    pub energy_wh: Option<f64>,
    pub power_w: Option<f64>,
    pub soc: Option<f64>,
}

/// A transaction's readings (by time, as the store gives them) as chart
/// points, one per moment that sampled energy, power or SoC.
pub fn series(meter_start: i64, samples: &[Sample]) -> Vec<MeterPoint> {
    let mut points: BTreeMap<DateTime<Utc>, (MeterPoint, f64, bool)> = BTreeMap::new();
    for s in samples {
        let (point, phase_power, has_phase_power) =
            points.entry(s.sampled_at).or_insert_with(|| {
                let point = MeterPoint {
                    at: s.sampled_at,
                    energy_wh: None,
                    power_w: None,
                    soc: None,
                };
                (point, 0.0, false)
            });
        match s.measurand.as_str() {
            "Energy.Active.Import.Register" if whole_meter(s) => {
                if let Some(wh) = register_wh(s) {
                    point.energy_wh = Some((wh - meter_start as f64).max(0.0));
                }
            }
            "Power.Active.Import" => match (whole_meter(s), power_w(s)) {
                (true, Some(w)) => point.power_w = Some(w),
                (false, Some(w)) if s.phase.is_some() => {
                    *phase_power += w;
                    *has_phase_power = true;
                }
                _ => {}
            },
            "SoC" => point.soc = number(s),
            _ => {}
        }
    }
    points
        .into_values()
        .map(|(mut point, phase_power, has_phase_power)| {
            if point.power_w.is_none() && has_phase_power {
                point.power_w = Some(phase_power);
            }
            point
        })
        .filter(|p| p.energy_wh.is_some() || p.power_w.is_some() || p.soc.is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 15, 10, minute, 0).unwrap()
    }

    fn register(minute: u32, value: &str) -> Sample {
        Sample {
            sampled_at: at(minute),
            measurand: "Energy.Active.Import.Register".into(),
            phase: None,
            unit: Some("Wh".into()),
            context: Some("Sample.Periodic".into()),
            location: None,
            format: None,
            value: value.into(),
        }
    }

    fn tx(meter_start: i64) -> TransactionRecord {
        TransactionRecord {
            id: 1,
            charger_id: "CP".into(),
            connector_id: 1,
            id_tag: "T".into(),
            id_tag_status: "Accepted".into(),
            reservation_id: None,
            meter_start,
            start_time: at(0),
            status: crate::store::TX_ACTIVE.into(),
            meter_stop: None,
            stop_time: None,
            stop_reason: None,
            stop_id_tag: None,
            last_register_wh: None,
            last_register_at: None,
            energy_wh: 0.0,
            soc_start: None,
            soc_last: None,
            soc_last_at: None,
            power_w_last: None,
            received_at: at(0),
            updated_at: at(0),
        }
    }

    #[test]
    fn chart_points_read_the_whole_meter_and_sum_phases_only_without_it() {
        let sample =
            |minute, measurand: &str, phase: Option<&str>, unit: &str, value: &str| Sample {
                measurand: measurand.into(),
                phase: phase.map(Into::into),
                unit: Some(unit.into()),
                ..register(minute, value)
            };
        let samples = [
            sample(1, "Energy.Active.Import.Register", None, "kWh", "1.5"),
            sample(1, "Energy.Active.Import.Register", Some("L1"), "Wh", "400"),
            sample(1, "Power.Active.Import", Some("L1"), "W", "3000"),
            sample(1, "Power.Active.Import", Some("L2"), "W", "3100"),
            sample(1, "SoC", None, "Percent", "40"),
            sample(2, "Power.Active.Import", None, "kW", "11"),
            sample(2, "Power.Active.Import", Some("L1"), "W", "3600"),
            sample(3, "Voltage", None, "V", "230"),
        ];
        let points = series(1000, &samples);
        assert_eq!(points.len(), 2, "{points:?}");
        assert_eq!(points[0].energy_wh, Some(500.0));
        assert_eq!(points[0].power_w, Some(6100.0));
        assert_eq!(points[0].soc, Some(40.0));
        assert_eq!(points[1].energy_wh, None);
        assert_eq!(points[1].power_w, Some(11000.0));
    }

    #[test]
    fn a_drop_under_one_wh_is_rounding_not_a_reset() {
        let mut t = tx(0);
        let a = register(1, "98.26");
        let b = register(2, "98");
        assert!(fold(&mut t, &[&a], at(30)).is_empty());
        assert!(fold(&mut t, &[&b], at(30)).is_empty());
        assert_eq!(t.energy_wh, 98.0);
        let c = register(3, "96.9");
        let found = fold(&mut t, &[&c], at(30));
        assert_eq!(found[0].0, "register_went_backwards");
    }

    #[test]
    fn late_arrivals_do_not_replace_the_latest_register() {
        let mut t = tx(1000);
        let newer = register(5, "1500");
        let older = register(4, "1400");
        fold(&mut t, &[&newer], at(30));
        fold(&mut t, &[&older], at(30));
        assert_eq!(t.last_register_wh, Some(1500.0));
        assert_eq!(t.energy_wh, 500.0);
    }

    #[test]
    fn kwh_registers_are_scaled_and_signed_data_is_unreadable() {
        let mut s = register(1, "1.5");
        s.unit = Some("kWh".into());
        assert_eq!(register_wh(&s), Some(1500.0));
        s.format = Some("SignedData".into());
        assert_eq!(register_wh(&s), None);
    }

    #[test]
    fn a_reading_from_the_future_counts_as_taken_on_arrival_and_is_flagged() {
        let mut t = tx(0);
        let mut s = register(0, "500");
        s.sampled_at = at(0) + chrono::TimeDelta::days(2);
        let found = fold(&mut t, &[&s], at(10));
        assert_eq!(found[0].0, "timestamp_in_future");
        assert_eq!(t.last_register_at, Some(at(10)));
    }

    #[test]
    fn a_window_forgets_the_oldest_values_and_says_so() {
        let mut w = Window::empty();
        for i in 0..(WINDOW_VALUES as i64 + 10) {
            w.remember(i as u64, i);
        }
        assert!(!w.covers(0));
        assert!(w.covers(WINDOW_VALUES as i64 + 9));
        assert!(w.contains(WINDOW_VALUES as i64 + 9, WINDOW_VALUES as u64 + 9));
        assert!(!w.contains(WINDOW_VALUES as i64 + 9, 1));
    }

    #[test]
    fn fingerprints_ignore_context_only() {
        let a = register(1, "100");
        let mut b = a.clone();
        b.context = Some("Transaction.End".into());
        assert_eq!(fingerprint(1, &a), fingerprint(1, &b));
        assert_ne!(fingerprint(1, &a), fingerprint(2, &a));
        let mut c = a.clone();
        c.value = "101".into();
        assert_ne!(fingerprint(1, &a), fingerprint(1, &c));
    }
}
