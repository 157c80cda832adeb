//! The figures of a session, from its energy, battery and clock. Pure
//! functions, so their edges are tested without a database.

use crate::store::SessionRecord;
use chrono::{DateTime, Utc};

/// Battery capacity when neither the driver nor the vehicle set one.
pub const DEFAULT_BATTERY_CAPACITY_WH: i64 = 60_000;

/// The end of the session's clock: its end, or while it runs, the latest
/// charger reading (OCPP, the charger's clock) or now (app, the server's).
pub fn clock_end(session: &SessionRecord, now: DateTime<Utc>) -> DateTime<Utc> {
    match session.end_time {
        Some(end) => end,
        None if session.source == "ocpp" => session
            .last_reading_at
            .unwrap_or(session.start_time)
            .max(session.start_time),
        None => now.max(session.start_time),
    }
}

/// Elapsed milliseconds, never negative.
pub fn elapsed_ms(session: &SessionRecord, now: DateTime<Utc>) -> i64 {
    (clock_end(session, now) - session.start_time)
        .num_milliseconds()
        .max(0)
}

/// Whole minutes elapsed.
pub fn duration_minutes(elapsed_ms: i64) -> i64 {
    elapsed_ms / 60_000
}

/// Average power in kW, the contract's formula on whole minutes: energy
/// (kWh) / duration (whole minutes) × 60, and 0 during the first minute.
/// Dividing by the exact elapsed time instead would show a session reported
/// a few milliseconds after it started at hundreds of thousands of kW.
pub fn average_power_kw(energy_wh: f64, elapsed_ms: i64) -> f64 {
    let minutes = duration_minutes(elapsed_ms);
    if minutes <= 0 || !energy_wh.is_finite() || energy_wh <= 0.0 {
        return 0.0;
    }
    round_to(energy_wh / 1000.0 / minutes as f64 * 60.0, 2)
}

/// Energy in Wh estimated from a battery rise (percent points) of a battery
/// of `capacity_wh`; nothing for a fall.
pub fn energy_from_battery_wh(start_percent: f64, end_percent: f64, capacity_wh: i64) -> f64 {
    if !(start_percent.is_finite() && end_percent.is_finite()) || end_percent <= start_percent {
        return 0.0;
    }
    // In Wh, rounded to the Wh: 35 points of 60 kWh is 21000 Wh exactly.
    ((end_percent - start_percent) * capacity_wh as f64 / 100.0).round()
}

pub fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// Cost = energy × the session's price, in minor units, rounded once.
pub fn reprice(session: &mut SessionRecord) {
    let digits = super::money::minor_digits(&session.currency);
    session.cost_minor = super::money::cost_minor(session.energy_wh, session.price_micros, digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn session(start: DateTime<Utc>) -> SessionRecord {
        let mut s = SessionRecord::begin(crate::store::SessionStart {
            user_id: "u".into(),
            station_id: "st".into(),
            station_name: "St".into(),
            connector_id: "connector-1".into(),
            tariff: crate::store::Tariff {
                price_micros: 165_000_000,
                currency: "NGN".into(),
            },
            battery_capacity_wh: DEFAULT_BATTERY_CAPACITY_WH,
            start_time: start,
        });
        s.battery_level_start = Some(45.0);
        s.battery_level = Some(45.0);
        s
    }

    #[test]
    fn the_seed_session_reproduces() {
        let start = Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap();
        let mut s = session(start);
        s.end_time = Some(start + chrono::Duration::minutes(75));
        s.energy_wh = energy_from_battery_wh(45.0, 80.0, s.battery_capacity_wh);
        assert_eq!(s.energy_wh, 21_000.0);
        reprice(&mut s);
        assert_eq!(s.cost_minor, 346_500);
        let ms = elapsed_ms(&s, start);
        assert_eq!(duration_minutes(ms), 75);
        assert_eq!(average_power_kw(s.energy_wh, ms), 16.8);
    }

    #[test]
    fn zero_duration_and_zero_energy_are_zero_not_errors() {
        let start = Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap();
        let s = session(start);
        assert_eq!(elapsed_ms(&s, start), 0);
        assert_eq!(average_power_kw(5000.0, 0), 0.0);
        assert_eq!(average_power_kw(0.0, 60_000), 0.0);
        assert_eq!(duration_minutes(59_999), 0);
        // A server clock behind the start never gives negative time.
        assert_eq!(elapsed_ms(&s, start - chrono::Duration::minutes(5)), 0);
    }

    #[test]
    fn average_power_counts_whole_minutes_only() {
        // 21 kWh over 75.5 minutes: the seed's 16.8 kW, not 16.69.
        assert_eq!(average_power_kw(21_000.0, 75 * 60_000 + 30_000), 16.8);
        // 7.35 kWh reported 35 ms, then 59.999 s, after the start: still the first minute.
        assert_eq!(average_power_kw(7_350.0, 35), 0.0);
        assert_eq!(average_power_kw(7_350.0, 59_999), 0.0);
        // From the first whole minute on: energy / minutes × 60.
        assert_eq!(average_power_kw(7_350.0, 60_000), 441.0);
        assert_eq!(average_power_kw(4_200.0, 15 * 60_000 + 59_999), 16.8);
        assert_eq!(average_power_kw(f64::INFINITY, 60_000), 0.0);
    }

    #[test]
    fn a_battery_that_falls_delivered_nothing() {
        assert_eq!(energy_from_battery_wh(80.0, 45.0, 60_000), 0.0);
        assert_eq!(energy_from_battery_wh(45.0, 80.0, 75_000), 26_250.0);
    }

    #[test]
    fn ocpp_sessions_run_on_the_chargers_clock() {
        let start = Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0).unwrap();
        let mut s = session(start);
        s.source = "ocpp".into();
        s.last_reading_at = Some(start + chrono::Duration::minutes(30));
        // The server's now (years later) does not matter.
        assert_eq!(
            duration_minutes(elapsed_ms(&s, start + chrono::Duration::days(400))),
            30
        );
    }
}
