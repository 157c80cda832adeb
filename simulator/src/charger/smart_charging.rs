//! Smart charging (OCPP 1.6 §3.13): the charging profiles a central system sets
//! with SetChargingProfile, and the power limit they put on a connector.
//!
//! The effective limit is the smallest of the hardware maximum, the charger-wide
//! `ChargePointMaxProfile`, and the connector's `TxProfile` (or, without one, its
//! `TxDefaultProfile`), each purpose taking its highest stack level in force.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::vehicle::{ChargerModel, PowerKind};
use ocpp_j::time::{format_ms, parse_charger_time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ChargePointMax,
    TxDefault,
    Tx,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: i64,
    pub connector_id: u32,
    pub stack_level: i64,
    pub purpose: Purpose,
    /// Absolute, Relative or Recurring (period in seconds).
    kind: Kind,
    valid_from: Option<DateTime<Utc>>,
    valid_to: Option<DateTime<Utc>>,
    pub transaction_id: Option<i64>,
    duration_s: Option<i64>,
    start_schedule: Option<DateTime<Utc>>,
    unit_amps: bool,
    /// (startPeriod seconds, limit, numberPhases), sorted by start.
    periods: Vec<(i64, f64, Option<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Absolute,
    Relative,
    Recurring(i64),
}

impl Profile {
    /// Reads `csChargingProfiles` / `chargingProfile`; the error text goes into the answer's log.
    pub fn parse(connector_id: u32, v: &Value) -> Result<Profile, String> {
        let int = |k: &str| v.get(k).and_then(Value::as_i64);
        let purpose = match v.get("chargingProfilePurpose").and_then(Value::as_str) {
            Some("ChargePointMaxProfile") => Purpose::ChargePointMax,
            Some("TxDefaultProfile") => Purpose::TxDefault,
            Some("TxProfile") => Purpose::Tx,
            other => return Err(format!("bad chargingProfilePurpose {other:?}")),
        };
        let kind = match v.get("chargingProfileKind").and_then(Value::as_str) {
            Some("Absolute") => Kind::Absolute,
            Some("Relative") => Kind::Relative,
            Some("Recurring") => match v.get("recurrencyKind").and_then(Value::as_str) {
                Some("Daily") => Kind::Recurring(86_400),
                Some("Weekly") => Kind::Recurring(7 * 86_400),
                other => return Err(format!("bad recurrencyKind {other:?}")),
            },
            other => return Err(format!("bad chargingProfileKind {other:?}")),
        };
        let schedule = v.get("chargingSchedule").ok_or("no chargingSchedule")?;
        let unit_amps = match schedule.get("chargingRateUnit").and_then(Value::as_str) {
            Some("A") => true,
            Some("W") => false,
            other => return Err(format!("bad chargingRateUnit {other:?}")),
        };
        let mut periods = Vec::new();
        for p in schedule
            .get("chargingSchedulePeriod")
            .and_then(Value::as_array)
            .ok_or("no periods")?
        {
            let start = p
                .get("startPeriod")
                .and_then(Value::as_i64)
                .ok_or("period without startPeriod")?;
            let limit = p
                .get("limit")
                .and_then(Value::as_f64)
                .ok_or("period without limit")?;
            let phases = p
                .get("numberPhases")
                .and_then(Value::as_u64)
                .map(|n| n as u8);
            periods.push((start, limit, phases));
        }
        if periods.is_empty() {
            return Err("no periods".into());
        }
        periods.sort_by_key(|p| p.0);
        let parse_time = |s: &str| parse_charger_time(s).map(|t| t.at);
        let ts = |k: &str| v.get(k).and_then(Value::as_str).and_then(parse_time);
        Ok(Profile {
            id: int("chargingProfileId").ok_or("no chargingProfileId")?,
            connector_id,
            stack_level: int("stackLevel").ok_or("no stackLevel")?,
            purpose,
            kind,
            valid_from: ts("validFrom"),
            valid_to: ts("validTo"),
            transaction_id: int("transactionId"),
            duration_s: schedule.get("duration").and_then(Value::as_i64),
            start_schedule: schedule
                .get("startSchedule")
                .and_then(Value::as_str)
                .and_then(parse_time),
            unit_amps,
            periods,
        })
    }

    /// When the schedule in force at `at` started, if it has.
    fn schedule_start(
        &self,
        at: DateTime<Utc>,
        tx_start: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        match self.kind {
            Kind::Absolute => Some(self.start_schedule.or(self.valid_from).unwrap_or(at)),
            Kind::Relative => Some(tx_start.unwrap_or(at)),
            Kind::Recurring(period) => {
                let origin = self.start_schedule?;
                let k = (at - origin).num_seconds().div_euclid(period);
                Some(origin + Duration::seconds(k * period))
            }
        }
    }

    /// This profile's limit in W at `at`, if it has one then.
    fn limit_w(
        &self,
        at: DateTime<Utc>,
        tx_start: Option<DateTime<Utc>>,
        kind: PowerKind,
    ) -> Option<f64> {
        if self.valid_from.is_some_and(|f| at < f) || self.valid_to.is_some_and(|t| at >= t) {
            return None;
        }
        let elapsed = (at - self.schedule_start(at, tx_start)?).num_seconds();
        if elapsed < 0 || self.duration_s.is_some_and(|d| elapsed >= d) {
            return None;
        }
        let &(_, limit, phases) = self.periods.iter().rev().find(|p| p.0 <= elapsed)?;
        Some(if self.unit_amps {
            kind.power_w(limit, phases)
        } else {
            limit
        })
    }

    /// Instants in `[from, to)` at which this profile's limit may change.
    fn breakpoints(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        tx_start: Option<DateTime<Utc>>,
    ) -> Vec<DateTime<Utc>> {
        let mut starts = Vec::new();
        match self.kind {
            Kind::Recurring(period) => {
                if let Some(mut s) = self.schedule_start(from, tx_start) {
                    while s < to {
                        starts.push(s);
                        s += Duration::seconds(period);
                    }
                }
            }
            _ => starts.extend(self.schedule_start(from, tx_start)),
        }
        let mut out: Vec<DateTime<Utc>> =
            self.valid_from.into_iter().chain(self.valid_to).collect();
        for s in starts {
            out.extend(self.periods.iter().map(|p| s + Duration::seconds(p.0)));
            out.extend(self.duration_s.map(|d| s + Duration::seconds(d)));
        }
        out.retain(|t| *t >= from && *t < to);
        out
    }
}

/// The transaction a limit is asked for: its server id (if known) and start time.
#[derive(Debug, Clone, Copy)]
pub struct TxContext {
    pub transaction_id: Option<i64>,
    pub start: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct Profiles {
    list: Vec<Profile>,
}

impl Profiles {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Installs a profile; one with the same id, or the same connector, purpose
    /// and stack level, is replaced (OCPP 1.6 §3.13.2).
    pub fn set(&mut self, p: Profile) {
        self.list.retain(|q| {
            q.id != p.id
                && !(q.connector_id == p.connector_id
                    && q.purpose == p.purpose
                    && q.stack_level == p.stack_level)
        });
        self.list.push(p);
    }

    /// ClearChargingProfile: removes the profiles matching every given criterion.
    /// Returns whether anything was removed.
    pub fn clear(
        &mut self,
        id: Option<i64>,
        connector: Option<u32>,
        purpose: Option<Purpose>,
        stack: Option<i64>,
    ) -> bool {
        let before = self.list.len();
        self.list.retain(|p| {
            let matches = id.is_none_or(|i| p.id == i)
                && connector.is_none_or(|c| p.connector_id == c)
                && purpose.is_none_or(|u| p.purpose == u)
                && stack.is_none_or(|s| p.stack_level == s);
            !matches
        });
        self.list.len() != before
    }

    /// A TxProfile lives only as long as its transaction.
    pub fn end_transaction(&mut self, connector: u32) {
        self.list
            .retain(|p| !(p.purpose == Purpose::Tx && p.connector_id == connector));
    }

    /// The power limit (W) on `connector` at `at`.
    pub fn limit_w(
        &self,
        connector: u32,
        at: DateTime<Utc>,
        tx: Option<TxContext>,
        kind: PowerKind,
        hw_max: f64,
    ) -> f64 {
        let tx_start = tx.map(|t| t.start);
        let best = |purpose: Purpose, connectors: &[u32]| -> Option<f64> {
            self.list
                .iter()
                .filter(|p| p.purpose == purpose && connectors.contains(&p.connector_id))
                .filter(|p| {
                    purpose != Purpose::Tx
                        || tx.is_some_and(|t| {
                            p.transaction_id.is_none() || p.transaction_id == t.transaction_id
                        })
                })
                .filter_map(|p| {
                    p.limit_w(at, tx_start, kind)
                        .map(|l| (p.stack_level, p.connector_id, l))
                })
                // Highest stack level wins; a connector's own profile beats connector 0's.
                .max_by_key(|(stack, conn, _)| (*stack, *conn))
                .map(|(_, _, l)| l)
        };
        let mut limit = hw_max;
        if let Some(l) = best(Purpose::ChargePointMax, &[0]) {
            limit = limit.min(l);
        }
        if let Some(l) =
            best(Purpose::Tx, &[connector]).or_else(|| best(Purpose::TxDefault, &[0, connector]))
        {
            limit = limit.min(l);
        }
        limit.max(0.0)
    }

    /// GetCompositeSchedule: the limits on `connector` for `duration_s` from `from`,
    /// as a `chargingSchedule` in the requested unit.
    pub fn composite(
        &self,
        connector: u32,
        from: DateTime<Utc>,
        duration_s: i64,
        tx: Option<TxContext>,
        hardware: ChargerModel,
        amps: bool,
    ) -> Value {
        let (kind, hw_max) = (hardware.kind, hardware.max_power_w);
        let to = from + Duration::seconds(duration_s);
        let mut points = vec![from];
        for p in &self.list {
            points.extend(p.breakpoints(from, to, tx.map(|t| t.start)));
        }
        points.sort();
        points.dedup();
        let mut periods: Vec<Value> = Vec::new();
        let mut last: Option<f64> = None;
        for t in points {
            let w = self.limit_w(connector, t, tx, kind, hw_max);
            let value = if amps { kind.current_a(w) } else { w };
            let value = (value * 10.0).round() / 10.0;
            if last != Some(value) {
                periods.push(json!({ "startPeriod": (t - from).num_seconds(), "limit": value }));
                last = Some(value);
            }
        }
        json!({
            "duration": duration_s,
            "startSchedule": format_ms(from),
            "chargingRateUnit": if amps { "A" } else { "W" },
            "chargingSchedulePeriod": periods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: PowerKind = PowerKind::Ac {
        phases: 3,
        voltage: 230.0,
    };

    fn profile(id: i64, purpose: &str, stack: i64, unit: &str, periods: Value) -> Value {
        json!({
            "chargingProfileId": id, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": { "chargingRateUnit": unit, "chargingSchedulePeriod": periods }
        })
    }

    #[test]
    fn a_tx_default_profile_limits_and_a_tx_profile_overrides_it() {
        let now = Utc::now();
        let tx = Some(TxContext {
            transaction_id: Some(7),
            start: now,
        });
        let mut ps = Profiles::default();
        ps.set(
            Profile::parse(
                0,
                &profile(
                    1,
                    "TxDefaultProfile",
                    0,
                    "A",
                    json!([{"startPeriod":0,"limit":16}]),
                ),
            )
            .unwrap(),
        );
        assert_eq!(ps.limit_w(1, now, tx, AC, 22_000.0), 11_040.0);
        ps.set(
            Profile::parse(
                1,
                &profile(
                    2,
                    "TxProfile",
                    1,
                    "W",
                    json!([{"startPeriod":0,"limit":20000},{"startPeriod":600,"limit":5000}]),
                ),
            )
            .unwrap(),
        );
        assert_eq!(ps.limit_w(1, now, tx, AC, 22_000.0), 20_000.0);
        assert_eq!(
            ps.limit_w(1, now + Duration::seconds(700), tx, AC, 22_000.0),
            5_000.0
        );
        ps.set(
            Profile::parse(
                0,
                &profile(
                    3,
                    "ChargePointMaxProfile",
                    0,
                    "W",
                    json!([{"startPeriod":0,"limit":15000}]),
                ),
            )
            .unwrap(),
        );
        assert_eq!(ps.limit_w(1, now, tx, AC, 22_000.0), 15_000.0);
        let c = ps.composite(1, now, 1200, tx, ChargerModel::default(), false);
        let periods = c["chargingSchedulePeriod"].as_array().unwrap();
        assert_eq!(periods.len(), 2);
        assert_eq!(periods[1]["startPeriod"], 600);
        assert!(ps.clear(Some(3), None, None, None));
        assert!(!ps.clear(Some(3), None, None, None));
        ps.end_transaction(1);
        assert_eq!(ps.limit_w(1, now, tx, AC, 22_000.0), 11_040.0);
    }
}
