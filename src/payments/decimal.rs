//! Exact decimal and big-integer arithmetic for money conversions.
//!
//! Balances on a chain are unsigned integers of up to 256 bits (wei, or a
//! token's smallest unit), and exchange rates come from configuration as
//! decimal strings ("2500.50"). Converting one into the other's minor units
//! (cents, kobo) must be exact: a float would overstate some balances and
//! understate others. This module has just enough arithmetic for that:
//!
//! - [`Decimal`]: a non-negative decimal parsed from a string, kept as an
//!   integer mantissa and a power-of-ten scale (`2500.50` = 250050 × 10⁻²).
//! - [`BigUint`]: `num-bigint`'s unsigned integer of any size, for balances
//!   multiplied by rates and powers of ten; [`parse_hex`] reads one from
//!   JSON-RPC hex.
//! - [`scale_to_minor`]: `amount / 10^decimals × rate`, in minor units of the
//!   fiat currency, rounded down.
//!
//! Rounding is always down (toward zero): a balance check must never say a
//! wallet holds more than it does.

use std::fmt;

/// Most significant digits a [`Decimal`] accepts. 36 digits fit in a `u128`
/// with room to spare and are far beyond any real exchange rate.
const MAX_DECIMAL_DIGITS: usize = 36;

/// A non-negative decimal number, exact: `mantissa × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    mantissa: u128,
    scale: u32,
}

/// Why a string is not a [`Decimal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("is empty")]
    Empty,
    #[error("must not be negative")]
    Negative,
    #[error(
        "must be written as digits with an optional decimal point, like 2500.50 (found {0:?})"
    )]
    InvalidCharacter(char),
    #[error("needs digits on both sides of the decimal point, like 0.5 or 5.0")]
    MissingDigits,
    #[error("has more than {MAX_DECIMAL_DIGITS} digits")]
    TooManyDigits,
    #[error("has {found} decimal places; at most {allowed} are allowed here")]
    TooPrecise { found: u32, allowed: u32 },
    #[error("is too large")]
    TooLarge,
}

impl Decimal {
    /// Parses a plain decimal such as `"2500.50"`, `"1"` or `"0.000125"`.
    ///
    /// Accepted: ASCII digits with at most one `.` that has digits on both
    /// sides; surrounding whitespace is ignored. Rejected, so that a typo in
    /// configuration is caught rather than guessed at: signs, exponents
    /// (`1e3`), thousands separators, `".5"` and `"5."`.
    pub fn parse(input: &str) -> Result<Self, DecimalError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DecimalError::Empty);
        }
        if s.starts_with('-') {
            return Err(DecimalError::Negative);
        }
        let (int_part, frac_part) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        if int_part.is_empty() || frac_part.is_some_and(str::is_empty) {
            return Err(DecimalError::MissingDigits);
        }
        let frac_part = frac_part.unwrap_or("");
        if let Some(bad) = int_part
            .chars()
            .chain(frac_part.chars())
            .find(|c| !c.is_ascii_digit())
        {
            return Err(DecimalError::InvalidCharacter(bad));
        }
        // Leading zeros of the integer part carry no information; counting
        // them would reject "000000…1" for no reason.
        let significant = int_part.trim_start_matches('0').len() + frac_part.len();
        if significant > MAX_DECIMAL_DIGITS {
            return Err(DecimalError::TooManyDigits);
        }
        let mut mantissa: u128 = 0;
        for c in int_part.chars().chain(frac_part.chars()) {
            let digit = u128::from(c as u8 - b'0');
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(digit))
                .ok_or(DecimalError::TooLarge)?;
        }
        Ok(Decimal {
            mantissa,
            scale: frac_part.len() as u32,
        })
    }

    /// The integer mantissa: `2500.50` → `250050`.
    pub fn mantissa(&self) -> u128 {
        self.mantissa
    }

    /// The number of decimal places the mantissa is shifted by: `2500.50` → `2`.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// This amount in integer minor units with `minor_digits` decimal places
    /// (`"12.34"`, 2 → `1234`). Refuses to round: an amount with more
    /// decimal places than the currency has is an error, since silently
    /// dropping digits of a price is rarely what anyone meant.
    pub fn to_minor_units(&self, minor_digits: u32) -> Result<i128, DecimalError> {
        if self.scale > minor_digits {
            // Trailing zeros beyond the currency's digits are harmless ("1.50" in a 1-digit currency).
            let excess = self.scale - minor_digits;
            let divisor = 10u128.checked_pow(excess).ok_or(DecimalError::TooPrecise {
                found: self.scale,
                allowed: minor_digits,
            })?;
            if !self.mantissa.is_multiple_of(divisor) {
                return Err(DecimalError::TooPrecise {
                    found: self.scale,
                    allowed: minor_digits,
                });
            }
            return i128::try_from(self.mantissa / divisor).map_err(|_| DecimalError::TooLarge);
        }
        let factor = 10u128
            .checked_pow(minor_digits - self.scale)
            .ok_or(DecimalError::TooLarge)?;
        self.mantissa
            .checked_mul(factor)
            .and_then(|v| i128::try_from(v).ok())
            .ok_or(DecimalError::TooLarge)
    }
}

impl std::str::FromStr for Decimal {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::parse(s)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return f.write_str(&digits);
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        write!(f, "{int_part}.{frac_part}")
    }
}

/// Formats integer minor units as a decimal string: `(1234, 2)` → `"12.34"`,
/// `(-5, 2)` → `"-0.05"`, `(7, 0)` → `"7"`. The inverse of
/// [`Decimal::to_minor_units`] for non-negative amounts.
pub fn format_minor_units(minor: i128, minor_digits: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let d = Decimal {
        mantissa: abs,
        scale: minor_digits,
    };
    format!("{sign}{d}")
}

pub use num_bigint::BigUint;

/// Why a string is not a hexadecimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("is not 0x-prefixed hex")]
    MissingPrefix,
    #[error("has no digits after 0x")]
    Empty,
    #[error("contains a non-hex character {0:?}")]
    InvalidCharacter(char),
}

/// Parses Ethereum JSON-RPC hex (`"0x1bc16d674ec80000"`), any length.
/// Leading zeros are allowed (DATA values are zero-padded; QUANTITY values
/// are not, and both mean the same number here). Only hex digits: the
/// `_` separators `num-bigint` would take are refused.
pub fn parse_hex(s: &str) -> Result<BigUint, HexError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(HexError::MissingPrefix)?;
    if digits.is_empty() {
        return Err(HexError::Empty);
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(HexError::InvalidCharacter(bad));
    }
    BigUint::parse_bytes(digits.as_bytes(), 16).ok_or(HexError::Empty)
}

fn pow10(exp: u32) -> BigUint {
    BigUint::from(10u32).pow(exp)
}

/// Converts `amount` smallest units of an asset with `amount_decimals`
/// decimals (wei and 18 for ether, 6 for USDC) into minor units of a fiat
/// currency with `minor_digits` digits, at `rate` fiat major units per whole
/// asset unit:
///
/// `floor(amount × rate × 10^minor_digits / 10^amount_decimals)`
///
/// The division happens last so nothing is lost in between, and rounds down.
/// Returns `None` when the result does not fit an `i128`.
pub fn scale_to_minor(
    amount: &BigUint,
    amount_decimals: u32,
    rate: &Decimal,
    minor_digits: u32,
) -> Option<i128> {
    let numerator = amount * BigUint::from(rate.mantissa()) * pow10(minor_digits);
    // Integer division of unsigned numbers is floor division.
    let minor = numerator / pow10(amount_decimals.checked_add(rate.scale())?);
    i128::try_from(&minor).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parses_plain_decimals() {
        assert_eq!(
            dec("2500.50"),
            Decimal {
                mantissa: 250050,
                scale: 2
            }
        );
        assert_eq!(
            dec("1"),
            Decimal {
                mantissa: 1,
                scale: 0
            }
        );
        assert_eq!(
            dec(" 0.000125 "),
            Decimal {
                mantissa: 125,
                scale: 6
            }
        );
        assert_eq!(
            dec("007"),
            Decimal {
                mantissa: 7,
                scale: 0
            }
        );
        assert_eq!(dec("2500.50").to_string(), "2500.50");
        assert_eq!(dec("0.05").to_string(), "0.05");
    }

    #[test]
    fn rejects_what_is_not_a_plain_decimal() {
        assert_eq!(Decimal::parse(""), Err(DecimalError::Empty));
        assert_eq!(Decimal::parse("-1"), Err(DecimalError::Negative));
        assert_eq!(
            Decimal::parse("1e3"),
            Err(DecimalError::InvalidCharacter('e'))
        );
        assert_eq!(
            Decimal::parse("1,000"),
            Err(DecimalError::InvalidCharacter(','))
        );
        assert_eq!(
            Decimal::parse("+1"),
            Err(DecimalError::InvalidCharacter('+'))
        );
        assert_eq!(
            Decimal::parse("1.2.3"),
            Err(DecimalError::InvalidCharacter('.'))
        );
        assert_eq!(Decimal::parse(".5"), Err(DecimalError::MissingDigits));
        assert_eq!(Decimal::parse("5."), Err(DecimalError::MissingDigits));
        assert_eq!(
            Decimal::parse(&"9".repeat(37)),
            Err(DecimalError::TooManyDigits)
        );
    }

    #[test]
    fn converts_decimals_to_minor_units_without_rounding() {
        assert_eq!(dec("12.34").to_minor_units(2), Ok(1234));
        assert_eq!(dec("12").to_minor_units(2), Ok(1200));
        assert_eq!(dec("1.50").to_minor_units(1), Ok(15));
        assert_eq!(dec("500").to_minor_units(0), Ok(500));
        assert_eq!(
            dec("12.345").to_minor_units(2),
            Err(DecimalError::TooPrecise {
                found: 3,
                allowed: 2
            })
        );
        assert_eq!(format_minor_units(1234, 2), "12.34");
        assert_eq!(format_minor_units(-5, 2), "-0.05");
        assert_eq!(format_minor_units(7, 0), "7");
    }

    fn hex_u128(s: &str) -> Option<u128> {
        u128::try_from(&parse_hex(s).unwrap()).ok()
    }

    #[test]
    fn parses_hex_of_any_width() {
        assert_eq!(hex_u128("0x0"), Some(0));
        assert_eq!(hex_u128("0x00"), Some(0));
        assert_eq!(
            hex_u128("0x1bc16d674ec80000"),
            Some(2_000_000_000_000_000_000)
        );
        assert_eq!(
            hex_u128("0X1BC16D674EC80000"),
            Some(2_000_000_000_000_000_000)
        );
        let padded = format!("0x{:064x}", 1_000_000u64);
        assert_eq!(hex_u128(&padded), Some(1_000_000));
        let max = format!("0x{}", "f".repeat(64));
        assert_eq!(hex_u128(&max), None);
        assert_eq!(parse_hex(&max).unwrap().bits(), 256);
        assert_eq!(parse_hex("1234"), Err(HexError::MissingPrefix));
        assert_eq!(parse_hex("0x"), Err(HexError::Empty));
        assert_eq!(parse_hex("0x12g4"), Err(HexError::InvalidCharacter('g')));
        assert_eq!(parse_hex("0x12_34"), Err(HexError::InvalidCharacter('_')));
        assert_eq!(parse_hex("0x+1"), Err(HexError::InvalidCharacter('+')));
    }

    const ETH: u128 = 1_000_000_000_000_000_000;

    fn convert(amount: u128, decimals: u32, rate: &str, minor: u32) -> Option<i128> {
        scale_to_minor(&BigUint::from(amount), decimals, &dec(rate), minor)
    }

    #[test]
    fn one_and_a_half_ether_at_2000_is_3000_00() {
        assert_eq!(convert(ETH + ETH / 2, 18, "2000", 2), Some(300_000));
    }

    #[test]
    fn fractional_rates_are_exact() {
        // 10 000 ETH at 2500.50 = 25 005 000.00
        assert_eq!(convert(10_000 * ETH, 18, "2500.50", 2), Some(2_500_500_000));
        // 0.1 ETH at 0.3: 0.03 exactly; a float would give 0.030000000000000002 or 0.0299…
        assert_eq!(convert(ETH / 10, 18, "0.3", 2), Some(3));
        assert_eq!(convert(ETH / 10, 18, "0.3", 4), Some(300));
    }

    #[test]
    fn conversion_rounds_down() {
        // 1.999999999999999999 ETH at 1 = 1.99(9…) → 199 cents, not 200.
        assert_eq!(convert(2 * ETH - 1, 18, "1", 2), Some(199));
        // One wei is worth nothing in cents.
        assert_eq!(convert(1, 18, "2500", 2), Some(0));
        // 123.456789 USDC at 1 → 12345 cents (0.6789 of a cent dropped).
        assert_eq!(convert(123_456_789, 6, "1", 2), Some(12_345));
        // 9.99 at 0.999 = 9.98001 → 998
        assert_eq!(convert(999, 2, "0.999", 2), Some(998));
    }

    #[test]
    fn zero_decimal_currencies_and_tokens() {
        // 1.5 ETH at 450000.75 JPY (0 minor digits) = 675001.125 → 675001
        assert_eq!(convert(ETH + ETH / 2, 18, "450000.75", 0), Some(675_001));
        // A token with 0 decimals: 7 tokens at 3.333 with 3 minor digits (e.g. KWD) = 23.331
        assert_eq!(convert(7, 0, "3.333", 3), Some(23_331));
        assert_eq!(convert(0, 18, "2500", 2), Some(0));
    }

    #[test]
    fn huge_values_convert_or_report_overflow() {
        // The largest uint256 in wei at a rate of 1: ~1.16e59 ETH, far past i128 → None.
        let max = parse_hex(&format!("0x{}", "f".repeat(64))).unwrap();
        assert_eq!(scale_to_minor(&max, 18, &dec("1"), 2), None);
        // …but with 77 decimals it is about 1.157 whole units → 115 cents.
        assert_eq!(scale_to_minor(&max, 77, &dec("1"), 2), Some(115));
        // A huge balance that still fits: 10^30 wei (10^12 ETH) at 1e6 → 10^18 × 100.
        assert_eq!(
            convert(10u128.pow(30), 18, "1000000", 2),
            Some(10i128.pow(20))
        );
        // Just over i128::MAX.
        assert_eq!(convert(i128::MAX as u128 + 1, 0, "1", 0), None);
        assert_eq!(convert(i128::MAX as u128, 0, "1", 0), Some(i128::MAX));
    }
}
