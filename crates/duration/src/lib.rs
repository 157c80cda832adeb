//! The one duration syntax shared by the server's settings and the
//! simulator's flags and scenarios, so both accept the same text.
//!
//! The grammar is `humantime`'s: a number and a unit (`250ms`, `30s`, `5m`,
//! `24h`, `2d`, `1w`; also `sec`, `min`, `hours`, `days`, ...), several such
//! terms added up (`1h 30m`), and decimal fractions that come out exact:
//! a fraction of a second or a minute to the nanosecond (`1.5s`, `0.25ms`,
//! `2.75m`), a fraction of an hour or longer to the second (`1.5h`, `0.25d`;
//! `0.3333h` is refused, as it is 1199.88 s). A bare number (`90`, `2.5`)
//! is seconds. Months (`M`, 30.44 days) and years (`y`, 365.25
//! days) are humantime's too.
//!
//! Nothing wraps or panics: a number too large for humantime, a fraction it
//! cannot represent exactly, or anything longer than [`MAX`] (100 years,
//! beyond which adding it to a clock could overflow) is an error that says
//! what is wrong.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted: 100 years of 365.25 days.
pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

/// Why a text is not a duration; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not in the grammar (empty, an unknown unit, a stray character).
    Invalid { text: String, reason: String },
    /// A number too large, or a fraction that does not come out exact.
    Overflow { text: String },
    /// Readable, but longer than [`MAX`].
    TooLong { text: String },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Invalid { text, reason } => write!(
                f,
                "{text:?} is not a duration like 250ms, 30s, 1.5h or 24h ({reason})"
            ),
            DurationError::Overflow { text } => write!(
                f,
                "{text:?} is too large a number, or a fraction that does not come out exact \
                 (a fraction of an hour or longer must make whole seconds, of a second \
                 or a minute whole nanoseconds)"
            ),
            DurationError::TooLong { text } => {
                write!(f, "{text:?} is longer than the 100 years a duration may be")
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration (see the crate documentation for the syntax).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let is_bare_number = !trimmed.is_empty()
        && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && trimmed.bytes().any(|b| b.is_ascii_digit());
    let parsed = if is_bare_number {
        humantime::parse_duration(&format!("{trimmed}s"))
    } else {
        humantime::parse_duration(trimmed)
    };
    let duration = parsed.map_err(|e| match e {
        humantime::DurationError::NumberOverflow => DurationError::Overflow {
            text: text.to_owned(),
        },
        other => DurationError::Invalid {
            text: text.to_owned(),
            reason: other.to_string(),
        },
    })?;
    if duration > MAX {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
        });
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn units_fractions_and_bare_seconds() {
        assert_eq!(parse("24h"), Ok(secs(86_400)));
        assert_eq!(parse("30s"), Ok(secs(30)));
        assert_eq!(parse("10m"), Ok(secs(600)));
        assert_eq!(parse("2d"), Ok(secs(172_800)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("90"), Ok(secs(90)));
        assert_eq!(parse(" 90 "), Ok(secs(90)));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1.5h"), Ok(secs(5400)));
        assert_eq!(parse("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("2.75m"), Ok(secs(165)));
        assert_eq!(parse("0.25d"), Ok(secs(21_600)));
        assert_eq!(parse("1h 30m"), Ok(secs(5400)));
        assert_eq!(parse("5min"), Ok(secs(300)));
        assert_eq!(parse("1w"), Ok(secs(7 * 86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn what_is_not_a_duration_says_so() {
        for bad in ["", "soon", "5 parsecs", "-5s", "1.s", ".", "5s!", "1,5s"] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, DurationError::Invalid { .. }), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("is not a duration"), "{e}");
        }
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap_or_a_panic() {
        // The old server parser multiplied n * 86_400 in u64 and wrapped.
        for huge in [
            "213503982334602d",
            "99999999999999999999999s",
            "18446744073709551615h",
            "0.0000000001s",
            "0.3333h",
        ] {
            assert_eq!(
                parse(huge),
                Err(DurationError::Overflow { text: huge.into() }),
                "{huge}"
            );
        }
        assert_eq!(parse("100y"), Ok(MAX));
        for long in ["101y", "36525.5d", "3155760001"] {
            assert_eq!(
                parse(long),
                Err(DurationError::TooLong { text: long.into() }),
                "{long}"
            );
        }
        assert!(parse("101y").unwrap_err().to_string().contains("100 years"));
    }
}
