//! Timestamps as OCPP chargers really send them, and as they like to read them.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// A charger's timestamp, with a note of what had to be assumed to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargerTime {
    pub at: DateTime<Utc>,
    /// The charger sent no zone designator; it was read as UTC.
    pub assumed_utc: bool,
}

/// Reads RFC 3339 and, leniently, the zone-less `2024-01-15T10:30:00[.sss]`
/// some chargers send (taken as UTC, and flagged so it can be recorded).
/// Sub-millisecond precision is dropped: the store and the wire keep ms.
pub fn parse_charger_time(text: &str) -> Option<ChargerTime> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(ChargerTime {
            at: truncate_ms(t.with_timezone(&Utc)),
            assumed_utc: false,
        });
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(ChargerTime {
                at: truncate_ms(Utc.from_utc_datetime(&naive)),
                assumed_utc: true,
            });
        }
    }
    None
}

/// RFC 3339 UTC with exactly three fractional digits: many chargers reject
/// more precision, and the REST contract uses the same shape.
pub fn format_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub fn now_ms() -> DateTime<Utc> {
    truncate_ms(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zoned_and_zoneless_timestamps() {
        let z = parse_charger_time("2024-01-15T10:30:00.123456789+01:00").unwrap();
        assert_eq!(format_ms(z.at), "2024-01-15T09:30:00.123Z");
        assert!(!z.assumed_utc);
        let naive = parse_charger_time("2024-01-15T10:30:00").unwrap();
        assert_eq!(format_ms(naive.at), "2024-01-15T10:30:00.000Z");
        assert!(naive.assumed_utc);
        assert!(parse_charger_time("yesterday").is_none());
    }
}
