//! OCPP-J 1.6 on the wire: frames ([`frame`]) and the small helpers every part of
//! the simulator shares (timestamps, message ids, error codes).

pub mod frame;

pub use frame::{CallError, Frame, FrameError};

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with exactly milliseconds (`2026-01-02T03:04:05.678Z`): some
/// central systems reject more digits, and OCPP-J 1.6 asks for no more than that.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an OCPP timestamp; tolerates a missing zone (read as UTC), as some servers send one.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// The OCPP-J 1.6 CALLERROR codes, spelled as the standard spells them
/// (including `OccurenceConstraintViolation`).
pub mod error_code {
    pub const NOT_IMPLEMENTED: &str = "NotImplemented";
    pub const NOT_SUPPORTED: &str = "NotSupported";
    pub const INTERNAL_ERROR: &str = "InternalError";
    pub const PROTOCOL_ERROR: &str = "ProtocolError";
    pub const SECURITY_ERROR: &str = "SecurityError";
    pub const FORMATION_VIOLATION: &str = "FormationViolation";
    pub const PROPERTY_CONSTRAINT_VIOLATION: &str = "PropertyConstraintViolation";
    pub const OCCURENCE_CONSTRAINT_VIOLATION: &str = "OccurenceConstraintViolation";
    pub const TYPE_CONSTRAINT_VIOLATION: &str = "TypeConstraintViolation";
    pub const GENERIC_ERROR: &str = "GenericError";
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
            + chrono::Duration::nanoseconds(678_912_345);
        assert_eq!(timestamp(t), "2026-01-02T03:04:05.678Z");
        assert_eq!(
            parse_timestamp("2026-01-02T03:04:05.678Z")
                .unwrap()
                .timestamp_subsec_millis(),
            678
        );
        assert!(parse_timestamp("2026-01-02T03:04:05").is_some());
    }
}
