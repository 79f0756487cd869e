//! Exact amounts: units and quantities travel as decimal strings and are stored as integer
//! micro-units (10⁻⁶). Never a float.
//!
//! Wire grammar (spec "Numbers"): `-?D{1,18}(.D{1,6})?` — at most 18 integer and 6 fractional
//! digits, no exponent, no sign other than a leading `-`, no whitespace. A stored amount must
//! also fit in a signed 64-bit count of micro-units (±9,223,372,036,854.775807 units); larger
//! values are rejected as out of range (see docs/ARCHITECTURE.md, "Numbers").

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};

/// Number of fractional digits every amount carries.
pub const SCALE: u32 = 6;
const MICROS_PER_UNIT: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error(
        "`{0}` is not a decimal number (expected digits, an optional `.` and up to 6 fractional digits)"
    )]
    Malformed(String),
    #[error("`{0}` has more than 18 integer or 6 fractional digits")]
    TooManyDigits(String),
    #[error("`{0}` is out of range (see the bounds in docs/ARCHITECTURE.md, \"Numbers\")")]
    OutOfRange(String),
    #[error("`{0}` must be greater than zero")]
    NotPositive(String),
    #[error("`{0}` must not be negative")]
    Negative(String),
}

/// How much of a rejected text an error quotes: enough to recognise it, never the whole of a
/// hostile megabyte.
const QUOTED: usize = 40;

/// `text` as an error quotes it: at most [`QUOTED`] characters, then `…`.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The largest unit price (and provider cost) accepted: 10¹² per unit. With amounts below
/// `Amount::MAX` (≈ 9.2 × 10¹² units) every money value (≤ ≈ 9.2 × 10²⁴) and any sum of up
/// to a thousand of them fits a `Decimal` (≈ 7.9 × 10²⁸).
pub const MAX_UNIT_PRICE: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

/// A unit price or provider cost: a non-negative decimal no larger than [`MAX_UNIT_PRICE`].
pub fn parse_unit_price(text: &str) -> Result<Decimal, AmountError> {
    let value = parse_quantity(text)?;
    if value > MAX_UNIT_PRICE {
        return Err(AmountError::OutOfRange(quoted(text)));
    }
    Ok(value)
}

/// Parses the wire grammar into an exact decimal.
pub fn parse_decimal(text: &str) -> Result<Decimal, AmountError> {
    let malformed = || AmountError::Malformed(quoted(text));
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    if let Some(f) = frac_part
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(malformed());
    }
    if int_part.len() > 18 || frac_part.is_some_and(|f| f.len() > SCALE as usize) {
        return Err(AmountError::TooManyDigits(quoted(text)));
    }
    text.parse::<Decimal>().map_err(|_| malformed())
}

/// A non-negative quantity (tokens, images, …) in the wire grammar.
pub fn parse_quantity(text: &str) -> Result<Decimal, AmountError> {
    let value = parse_decimal(text)?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(AmountError::Negative(quoted(text)));
    }
    Ok(value)
}

/// Renders a decimal without trailing zeros (`"1250.5"`, `"0"`).
pub fn format_decimal(value: Decimal) -> String {
    let normalized = value.normalize();
    if normalized.is_zero() {
        "0".to_string()
    } else {
        normalized.to_string()
    }
}

/// Renders a sum of micro-units (which may exceed an [`Amount`]) as units (`"12.5"`).
pub fn format_micros(micros: i128) -> String {
    match Decimal::try_from_i128_with_scale(micros, 6) {
        Ok(value) => format_decimal(value),
        // Beyond 96 bits: whole units and the fraction separately.
        Err(_) => {
            let sign = if micros < 0 { "-" } else { "" };
            let (whole, fraction) = (
                micros.unsigned_abs() / 1_000_000,
                micros.unsigned_abs() % 1_000_000,
            );
            let fraction = format!("{fraction:06}");
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                format!("{sign}{whole}")
            } else {
                format!("{sign}{whole}.{fraction}")
            }
        }
    }
}

/// An exact amount of units, held as a count of micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub const MAX: Amount = Amount(i64::MAX);

    pub const fn from_micros(micros: i64) -> Self {
        Amount(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn from_units(units: i64) -> Option<Self> {
        units.checked_mul(MICROS_PER_UNIT).map(Amount)
    }

    /// Any amount in the wire grammar, signed.
    pub fn parse(text: &str) -> Result<Self, AmountError> {
        let value = parse_decimal(text)?;
        Self::from_decimal_exact(value).ok_or_else(|| AmountError::OutOfRange(quoted(text)))
    }

    /// An amount that must be > 0 (grant amounts, explicit debits).
    pub fn parse_positive(text: &str) -> Result<Self, AmountError> {
        let amount = Self::parse(text)?;
        if amount.0 <= 0 {
            return Err(AmountError::NotPositive(quoted(text)));
        }
        Ok(amount)
    }

    /// An amount that must be ≥ 0 (limits, flat prices).
    pub fn parse_non_negative(text: &str) -> Result<Self, AmountError> {
        let amount = Self::parse(text)?;
        if amount.0 < 0 {
            return Err(AmountError::Negative(quoted(text)));
        }
        Ok(amount)
    }

    /// Converts a decimal with at most 6 fractional digits; `None` if it does not fit.
    fn from_decimal_exact(value: Decimal) -> Option<Self> {
        let micros = value.checked_mul(Decimal::from(MICROS_PER_UNIT))?;
        if !micros.fract().is_zero() {
            return None;
        }
        // Symmetric: −MAX..=MAX (i64::MIN has no positive counterpart to negate into).
        i64::try_from(micros)
            .ok()
            .filter(|&m| m != i64::MIN)
            .map(Amount)
    }

    /// Rounds up (away from zero for positives, toward +∞) to 6 places; `None` if out of range.
    pub fn from_decimal_ceil(value: Decimal) -> Option<Self> {
        let rounded = value.round_dp_with_strategy(SCALE, RoundingStrategy::ToPositiveInfinity);
        Self::from_decimal_exact(rounded)
    }

    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, SCALE)
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount(self.0.saturating_sub(other.0))
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_decimal(self.to_decimal()))
    }
}

/// Serialized as its decimal string, so stored documents stay exact and readable.
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Amount::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_wire_grammar() {
        assert_eq!(Amount::parse("1250.5").unwrap().micros(), 1_250_500_000);
        assert_eq!(Amount::parse("0").unwrap(), Amount::ZERO);
        assert_eq!(Amount::parse("-3.000001").unwrap().micros(), -3_000_001);
        assert_eq!(Amount::parse("007").unwrap().micros(), 7_000_000);
        assert_eq!(Amount::parse("0.000001").unwrap().micros(), 1);
    }

    /// An error quotes the start of what it rejects, never all of a hostile megabyte.
    #[test]
    fn errors_quote_at_most_forty_characters() {
        let long = "é".repeat(1_000_000);
        let message = Amount::parse(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{}", message.len());
        assert!(
            message.starts_with(&format!("`{}…`", "é".repeat(40))),
            "{message}"
        );
        let message = Amount::parse("1,5").unwrap_err().to_string();
        assert!(message.starts_with("`1,5` is not a decimal"), "{message}");
    }

    #[test]
    fn rejects_what_the_spec_forbids() {
        for bad in [
            "", " 1", "1 ", "1e3", "NaN", "inf", "+1", ".5", "5.", "1.2.3", "1,5", "0x10", "--1",
            "-", "١",
        ] {
            assert!(
                matches!(Amount::parse(bad), Err(AmountError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
        assert!(matches!(
            Amount::parse("1.0000001"),
            Err(AmountError::TooManyDigits(_))
        ));
        assert!(matches!(
            Amount::parse("1234567890123456789"),
            Err(AmountError::TooManyDigits(_))
        ));
        // 18 digits are grammatical but do not fit the i64 micro-unit store.
        assert!(matches!(
            Amount::parse("999999999999999999"),
            Err(AmountError::OutOfRange(_))
        ));
        assert!(matches!(
            Amount::parse_positive("0"),
            Err(AmountError::NotPositive(_))
        ));
        assert!(matches!(
            Amount::parse_positive("-1"),
            Err(AmountError::NotPositive(_))
        ));
        assert!(matches!(
            Amount::parse_non_negative("-0.5"),
            Err(AmountError::Negative(_))
        ));
    }

    #[test]
    fn bounds_are_symmetric_and_prices_bounded() {
        assert_eq!(Amount::parse("9223372036854.775807"), Ok(Amount::MAX));
        assert_eq!(
            Amount::parse("-9223372036854.775807"),
            Ok(Amount::from_micros(-i64::MAX))
        );
        assert!(matches!(
            Amount::parse("-9223372036854.775808"),
            Err(AmountError::OutOfRange(_))
        ));
        assert_eq!(
            parse_unit_price("1000000000000"),
            Ok(Decimal::from(1_000_000_000_000i64))
        );
        assert!(matches!(
            parse_unit_price("1000000000000.000001"),
            Err(AmountError::OutOfRange(_))
        ));
        // The largest money value fits, with room for a thousand of them in a sum.
        let money = Amount::MAX
            .to_decimal()
            .checked_mul(MAX_UNIT_PRICE)
            .unwrap();
        assert!(money.checked_mul(Decimal::from(1000)).is_some());
    }

    #[test]
    fn formats_without_trailing_zeros() {
        assert_eq!(Amount::from_micros(1_250_500_000).to_string(), "1250.5");
        assert_eq!(Amount::ZERO.to_string(), "0");
        assert_eq!(Amount::from_micros(-1).to_string(), "-0.000001");
        assert_eq!(Amount::from_micros(5_000_000).to_string(), "5");
    }

    #[test]
    fn ceil_rounds_up_to_six_places() {
        let d = Decimal::new(123_456_789, 9); // 0.123456789
        assert_eq!(Amount::from_decimal_ceil(d).unwrap().micros(), 123_457);
        let exact = Decimal::new(5, 1);
        assert_eq!(Amount::from_decimal_ceil(exact).unwrap().micros(), 500_000);
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(micros in i64::MIN + 1..i64::MAX) {
            let amount = Amount::from_micros(micros);
            prop_assert_eq!(Amount::parse(&amount.to_string()).unwrap(), amount);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = Amount::parse(&text);
        }
    }
}
