//! Money without floating point: amounts are integer minor units of an ISO
//! 4217 currency, prices are integer millionths of a major unit per kWh, and
//! a cost is rounded once, half up, the way a receipt is.

use iso_currency::Currency;
use serde_json::Value;

/// Digits after the decimal point of an ISO 4217 currency, from the ISO
/// table (`iso_currency`). Every code that enters the system (an operator's
/// station, a wallet credit, `CSMS_DEFAULT_CURRENCY`) went through
/// [`parse_currency`], which refuses codes the table does not know; the
/// fallback of two digits is only for a row written before that check.
pub fn minor_digits(currency: &str) -> u32 {
    Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .map_or(2, u32::from)
}

/// Why a text is not a currency this system can keep money in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("currency must be a three-letter ISO 4217 code")]
    NotACode,
    #[error("currency {0} is not an ISO 4217 currency code")]
    Unknown(String),
    #[error("currency {0} has no minor unit in ISO 4217 (it is not money one can pay in)")]
    NoMinorUnit(String),
}

/// A currency code: three letters naming an ISO 4217 currency that has a
/// minor unit (so `XAU`, gold, and `XXX`, no currency, are refused).
/// Upper-cased: `ngn` is `NGN`.
pub fn parse_currency(text: &str) -> Result<String, CurrencyError> {
    let upper = text.trim().to_ascii_uppercase();
    if upper.len() != 3 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CurrencyError::NotACode);
    }
    let currency = Currency::from_code(&upper).ok_or(CurrencyError::Unknown(upper.clone()))?;
    if currency.exponent().is_none() {
        return Err(CurrencyError::NoMinorUnit(upper));
    }
    Ok(upper)
}

pub const MICROS: i128 = 1_000_000;

/// A price per kWh from JSON (a number or a decimal string) into millionths
/// of a major unit. Read from the JSON text itself, so `0.1` is exactly
/// 100000, not a binary approximation. More than six decimals, negatives and
/// absurd values are refused.
pub fn parse_price_micros(value: &Value) -> Option<i64> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    parse_decimal_scaled(&text, 6).filter(|m| *m >= 0 && *m <= 1_000_000_000_000_000)
}

/// `"12.345"` with `scale` 6 → 12345000. Plain decimals only (no exponent
/// beyond what serde_json prints for ordinary numbers).
pub fn parse_decimal_scaled(text: &str, scale: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > scale as usize {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction_value: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scaled = whole.checked_mul(10i128.pow(scale))?
        + fraction_value * 10i128.pow(scale - fraction.len() as u32);
    let signed = if negative { -scaled } else { scaled };
    i64::try_from(signed).ok()
}

/// An amount in major units from JSON into minor units of `currency`;
/// refuses more decimals than the currency has.
pub fn parse_amount_minor(value: &Value, currency: &str) -> Option<i64> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    parse_decimal_scaled(&text, minor_digits(currency))
}

/// Divides, rounding half away from zero.
fn div_round(numerator: i128, denominator: i128) -> i128 {
    let q = numerator / denominator;
    let r = numerator % denominator;
    if r.abs() * 2 >= denominator.abs() {
        q + numerator.signum() * denominator.signum()
    } else {
        q
    }
}

/// Cost of `energy_wh` at `price_micros` per kWh, in minor units of a
/// currency with `digits` minor digits, rounded once. Energy is taken to the
/// milliwatt-hour, which is finer than any meter reports.
pub fn cost_minor(energy_wh: f64, price_micros: i64, digits: u32) -> i64 {
    if !energy_wh.is_finite() || energy_wh <= 0.0 {
        return 0;
    }
    let milli_wh = (energy_wh * 1000.0).round() as i128;
    // mWh × micros-per-kWh × 10^digits / (10^6 mWh per kWh × 10^6 micros per unit)
    let numerator = milli_wh * price_micros as i128 * 10i128.pow(digits);
    let cost = div_round(numerator, MICROS * MICROS);
    i64::try_from(cost).unwrap_or(i64::MAX)
}

/// Minor units as the JSON number a client reads in major units: a whole
/// number when it is one (`693`), else the exact decimal (`693.5`).
pub fn major_json(minor: i64, currency: &str) -> Value {
    let digits = minor_digits(currency);
    let unit = 10i64.pow(digits);
    if minor % unit == 0 {
        return Value::from(minor / unit);
    }
    // The decimal text is exact; the f64 nearest to it prints back as the
    // same shortest text, so clients see exactly these digits.
    let text = format!(
        "{}{}.{:0width$}",
        if minor < 0 { "-" } else { "" },
        (minor / unit).abs(),
        (minor % unit).abs(),
        width = digits as usize
    );
    Value::from(text.trim_end_matches('0').parse::<f64>().unwrap_or(0.0))
}

/// A price in micros as the JSON number of major units per kWh.
pub fn price_json(price_micros: i64) -> Value {
    if price_micros % 1_000_000 == 0 {
        return Value::from(price_micros / 1_000_000);
    }
    Value::from(
        format!(
            "{}.{:06}",
            price_micros / 1_000_000,
            price_micros % 1_000_000
        )
        .trim_end_matches('0')
        .parse::<f64>()
        .unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seed_examples_cost_what_the_receipt_says() {
        // 165 NGN per kWh.
        let price = parse_price_micros(&json!(165)).unwrap();
        assert_eq!(cost_minor(4200.0, price, 2), 69_300);
        assert_eq!(major_json(69_300, "NGN"), json!(693));
        assert_eq!(cost_minor(21_000.0, price, 2), 346_500);
        assert_eq!(major_json(346_500, "NGN"), json!(3465));
    }

    #[test]
    fn rounding_happens_once_half_up() {
        let price = parse_price_micros(&json!("0.35")).unwrap();
        assert_eq!(price, 350_000);
        // 1.5 Wh at 0.35 per kWh = 0.000525 → 0.00 EUR
        assert_eq!(cost_minor(1.5, price, 2), 0);
        // 15 Wh = 0.00525 → 0.01 (half up)
        assert_eq!(cost_minor(15.0, price, 2), 1);
        // 14 Wh = 0.0049 → 0.00
        assert_eq!(cost_minor(14.0, price, 2), 0);
        assert_eq!(major_json(1, "EUR"), json!(0.01));
        assert_eq!(major_json(12_345, "EUR"), json!(123.45));
        assert_eq!(major_json(12_340, "EUR"), json!(123.4));
    }

    #[test]
    fn currencies_without_minor_units_and_with_three() {
        let price = parse_price_micros(&json!(30)).unwrap();
        assert_eq!(minor_digits("JPY"), 0);
        assert_eq!(cost_minor(10_500.0, price, 0), 315);
        assert_eq!(major_json(315, "JPY"), json!(315));
        assert_eq!(minor_digits("KWD"), 3);
        assert_eq!(
            cost_minor(1_000.0, parse_price_micros(&json!("0.0125")).unwrap(), 3),
            13
        );
        assert_eq!(major_json(13, "KWD"), json!(0.013));
    }

    #[test]
    fn zero_and_negative_energy_cost_nothing() {
        assert_eq!(cost_minor(0.0, 165_000_000, 2), 0);
        assert_eq!(cost_minor(-5.0, 165_000_000, 2), 0);
        assert_eq!(cost_minor(f64::NAN, 165_000_000, 2), 0);
    }

    #[test]
    fn prices_and_amounts_are_read_exactly_or_refused() {
        assert_eq!(parse_price_micros(&json!(0.1)), Some(100_000));
        assert_eq!(
            parse_price_micros(&json!("12.3456789")),
            None,
            "more than six decimals"
        );
        assert_eq!(parse_price_micros(&json!(-1)), None);
        assert_eq!(parse_price_micros(&json!("abc")), None);
        assert_eq!(parse_amount_minor(&json!(5000), "NGN"), Some(500_000));
        assert_eq!(parse_amount_minor(&json!("10.5"), "JPY"), None);
        assert_eq!(parse_currency("ngn").as_deref(), Ok("NGN"));
        assert_eq!(parse_currency("NAIRA"), Err(CurrencyError::NotACode));
        assert_eq!(price_json(165_000_000), json!(165));
        assert_eq!(price_json(350_000), json!(0.35));
    }

    #[test]
    fn currencies_come_from_the_iso_table() {
        assert_eq!(minor_digits("EUR"), 2);
        assert_eq!(minor_digits("CLF"), 4);
        assert_eq!(minor_digits("BHD"), 3);
        assert_eq!(minor_digits("ISK"), 0);
        assert_eq!(parse_currency(" eur ").as_deref(), Ok("EUR"));
        assert_eq!(
            parse_currency("ABC"),
            Err(CurrencyError::Unknown("ABC".into()))
        );
        assert_eq!(
            parse_currency("xau"),
            Err(CurrencyError::NoMinorUnit("XAU".into()))
        );
        assert_eq!(parse_currency("E1R"), Err(CurrencyError::NotACode));
        assert!(CurrencyError::Unknown("ABC".into())
            .to_string()
            .contains("not an ISO 4217"));
    }
}
