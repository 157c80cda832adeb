//! Sessions and statistics as the REST contract shows them.

use super::calc;
use super::money::{major_json, price_json};
use crate::ocpp::time::format_ms;
use crate::store::{SessionRecord, SESSION_CANCELLED, SESSION_COMPLETED};
use chrono::{DateTime, Datelike, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// A number as JSON: whole values as integers (`52`, not `52.0`).
pub fn num(value: f64) -> Value {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 9e15 {
        Value::from(value as i64)
    } else {
        Value::from(value)
    }
}

pub fn session_json(s: &SessionRecord, now: DateTime<Utc>) -> Value {
    let elapsed = calc::elapsed_ms(s, now);
    let cost = if s.status == SESSION_CANCELLED {
        0
    } else {
        s.cost_minor
    };
    json!({
        "id": s.id,
        "userId": s.user_id,
        "stationId": s.station_id,
        "stationName": s.station_name,
        "connectorId": s.connector_id,
        "startTime": format_ms(s.start_time),
        "endTime": s.end_time.map(format_ms),
        "duration": calc::duration_minutes(elapsed),
        "energyDelivered": num(calc::round_to(s.energy_wh / 1000.0, 3)),
        "totalCost": major_json(cost, &s.currency),
        "currency": s.currency,
        "pricePerKWh": price_json(s.price_micros),
        "averagePower": num(calc::average_power_kw(s.energy_wh, elapsed)),
        "batteryLevel": s.battery_level.map(num),
        "batteryLevelStart": s.battery_level_start.map(num),
        "status": s.status,
        "stationRating": s.station_rating,
        "source": s.source,
        "chargerId": s.charger_id,
        "transactionId": s.transaction_id,
        "endReason": s.end_reason,
    })
}

/// Which sessions a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Started in the last 7 days.
    Recent,
    /// Started in the current UTC calendar month.
    ThisMonth,
    AllTime,
}

impl Period {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "recent" => Some(Period::Recent),
            "this-month" => Some(Period::ThisMonth),
            "all-time" => Some(Period::AllTime),
            _ => None,
        }
    }

    /// The earliest start the period takes at `now` (`None`: any).
    pub fn since(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Period::Recent => Some(now - chrono::Duration::days(7)),
            Period::ThisMonth => now
                .date_naive()
                .with_day(1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc()),
            Period::AllTime => None,
        }
    }
}

/// Statistics over completed sessions. Money is summed in minor units per
/// currency; `totalSpent` is in the driver's most used currency (the usual
/// case is one), and `spentByCurrency` lists every one. A session counts in
/// the month it started.
pub fn stats_json(sessions: &[SessionRecord], now: DateTime<Utc>) -> Value {
    let completed: Vec<&SessionRecord> = sessions
        .iter()
        .filter(|s| s.status == SESSION_COMPLETED)
        .collect();
    let total_energy_wh: f64 = completed.iter().map(|s| s.energy_wh).sum();
    let mut spent: BTreeMap<&str, (i64, usize)> = BTreeMap::new();
    for s in &completed {
        let entry = spent.entry(s.currency.as_str()).or_default();
        entry.0 += s.cost_minor;
        entry.1 += 1;
    }
    let main_currency = spent
        .iter()
        .max_by_key(|(_, (_, n))| *n)
        .map(|(c, _)| (*c).to_owned());
    let total_spent = main_currency
        .as_deref()
        .map(|c| major_json(spent[c].0, c))
        .unwrap_or(json!(0));
    let average_minutes = if completed.is_empty() {
        0.0
    } else {
        let total: i64 = completed
            .iter()
            .map(|s| calc::duration_minutes(calc::elapsed_ms(s, now)))
            .sum();
        calc::round_to(total as f64 / completed.len() as f64, 1)
    };
    let mut by_station: HashMap<&str, (usize, DateTime<Utc>, &str)> = HashMap::new();
    for s in &completed {
        let e = by_station.entry(s.station_id.as_str()).or_insert((
            0,
            s.start_time,
            s.station_name.as_str(),
        ));
        e.0 += 1;
        if s.start_time > e.1 {
            e.1 = s.start_time;
        }
    }
    // Most sessions; a tie goes to the station used most recently. The
    // contract's favoriteStation is the station id; the name rides beside it.
    let favorite = by_station
        .iter()
        .max_by_key(|(_, (n, last, _))| (*n, *last))
        .map(|(id, (_, _, name))| (id.to_string(), name.to_string()));
    let mut months: BTreeMap<String, (usize, f64, BTreeMap<&str, i64>)> = BTreeMap::new();
    for s in &completed {
        let m = months
            .entry(s.start_time.format("%Y-%m").to_string())
            .or_default();
        m.0 += 1;
        m.1 += s.energy_wh;
        *m.2.entry(s.currency.as_str()).or_default() += s.cost_minor;
    }
    let monthly: Vec<Value> = months
        .into_iter()
        .map(|(month, (n, wh, money))| {
            let spent = main_currency.as_deref().and_then(|c| money.get(c).map(|m| major_json(*m, c))).unwrap_or(json!(0));
            json!({"month": month, "sessions": n, "energyUsed": num(calc::round_to(wh / 1000.0, 3)), "totalSpent": spent})
        })
        .collect();
    json!({
        "totalSessions": completed.len(),
        "totalEnergyUsed": num(calc::round_to(total_energy_wh / 1000.0, 3)),
        "totalSpent": total_spent,
        "currency": main_currency,
        "spentByCurrency": spent.iter().map(|(c, (m, _))| (c.to_string(), major_json(*m, c))).collect::<serde_json::Map<_, _>>(),
        "averageSessionDuration": num(average_minutes),
        "favoriteStation": favorite.as_ref().map(|(id, _)| id),
        "favoriteStationName": favorite.as_ref().map(|(_, name)| name),
        "monthlyUsage": monthly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn completed(
        start: DateTime<Utc>,
        minutes: i64,
        wh: f64,
        cost: i64,
        station: &str,
    ) -> SessionRecord {
        let mut s = SessionRecord::begin(crate::store::SessionStart {
            user_id: "u".into(),
            station_id: station.into(),
            station_name: format!("{station} name"),
            connector_id: "connector-1".into(),
            tariff: crate::store::Tariff {
                price_micros: 165_000_000,
                currency: "NGN".into(),
            },
            battery_capacity_wh: 60_000,
            start_time: start,
        });
        s.id = format!("{start}");
        s.status = SESSION_COMPLETED.into();
        s.end_time = Some(start + chrono::Duration::minutes(minutes));
        s.energy_wh = wh;
        s.energy_reported = true;
        s.cost_minor = cost;
        s
    }

    #[test]
    fn a_session_crossing_a_month_boundary_counts_in_the_month_it_started() {
        let late = Utc.with_ymd_and_hms(2024, 1, 31, 23, 30, 0).unwrap();
        let feb = Utc.with_ymd_and_hms(2024, 2, 10, 12, 0, 0).unwrap();
        let sessions = vec![
            completed(late, 60, 21_000.0, 346_500, "a"),
            completed(feb, 30, 4_200.0, 69_300, "b"),
            completed(feb, 30, 4_200.0, 69_300, "b"),
        ];
        let stats = stats_json(&sessions, feb);
        assert_eq!(stats["totalSessions"], 3);
        assert_eq!(stats["totalEnergyUsed"], json!(29.4));
        assert_eq!(stats["totalSpent"], json!(4851));
        // The station id, as the contract says, with its name beside it.
        assert_eq!(stats["favoriteStation"], "b");
        assert_eq!(stats["favoriteStationName"], "b name");
        assert_eq!(stats["averageSessionDuration"], json!(40));
        assert_eq!(
            stats["monthlyUsage"],
            json!([
                {"month": "2024-01", "sessions": 1, "energyUsed": 21, "totalSpent": 3465},
                {"month": "2024-02", "sessions": 2, "energyUsed": 8.4, "totalSpent": 1386}
            ])
        );
    }

    #[test]
    fn no_sessions_no_division_by_zero() {
        let stats = stats_json(&[], Utc::now());
        assert_eq!(stats["totalSessions"], 0);
        assert_eq!(stats["averageSessionDuration"], 0);
        assert_eq!(stats["favoriteStation"], Value::Null);
        assert_eq!(stats["favoriteStationName"], Value::Null);
    }

    #[test]
    fn periods_filter_by_start() {
        let now = Utc.with_ymd_and_hms(2024, 3, 2, 12, 0, 0).unwrap();
        // What the session list's query keeps: a start at or after `since`.
        let contains =
            |p: Period, start: DateTime<Utc>| p.since(now).is_none_or(|since| start >= since);
        assert!(contains(Period::Recent, now - chrono::Duration::days(6)));
        assert!(!contains(Period::Recent, now - chrono::Duration::days(8)));
        assert!(contains(
            Period::ThisMonth,
            Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
        ));
        assert!(!contains(
            Period::ThisMonth,
            Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
        ));
        assert!(contains(
            Period::AllTime,
            Utc.with_ymd_and_hms(1990, 1, 1, 0, 0, 0).unwrap()
        ));
        assert_eq!(Period::parse("yesterday"), None);
    }
}
