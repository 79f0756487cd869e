//! Pricing a request: `units = flat_units + Σ quantity/per × units`, rounded up to 6 decimal
//! places, then capped at `max_units` (spec "Pricing a request").

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use sea_orm::{DeriveActiveEnum, EnumIter, prelude::StringLen};
use serde::{Deserialize, Serialize};

use super::amount::Amount;

/// One price-component: `units` per `per` of the quantity `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub per: Decimal,
    pub units: Amount,
}

/// A rate card's stored state (`DRAFT`, `PUBLISHED`; SUPERSEDED is derived when read: a
/// later card is in force).
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum CardState {
    #[sea_orm(string_value = "DRAFT")]
    Draft,
    #[sea_orm(string_value = "PUBLISHED")]
    Published,
}

/// The price of one request type on a rate card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub request_type: String,
    pub flat_units: Amount,
    pub dimensions: Vec<Dimension>,
    pub max_units: Option<Amount>,
    /// Operator-only: which model/provider serves the request type today.
    pub route: String,
    /// Operator-only: money the provider pays per request (decimal string, may be empty).
    pub provider_cost: String,
    /// Reference list prices of its quantities (shown to buyers). Not stored when empty, so
    /// cards written before they existed keep their text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub list_prices: Vec<ListPrice>,
}

/// A reference list price: `price` money per `per` of the quantity `dimension`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPrice {
    pub dimension: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub per: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("request_type must not be empty")]
    EmptyRequestType,
    #[error("request type `{0}` appears twice on the card")]
    DuplicateRequestType(String),
    #[error("dimension `{dimension}` of `{request_type}` appears twice")]
    DuplicateDimension {
        request_type: String,
        dimension: String,
    },
    #[error("dimension `{dimension}` of `{request_type}`: {problem}")]
    BadDimension {
        request_type: String,
        dimension: String,
        problem: &'static str,
    },
    #[error("`{0}`: prices must not be negative")]
    NegativePrice(String),
    #[error("a rate card needs at least one rate")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("the price of this request is out of range")]
    Overflow,
    /// A quantity the rate prices no dimension for (most likely a misspelt name).
    #[error("`{request_type}` has no dimension `{dimension}`; it prices: {known}")]
    UnknownDimension {
        request_type: String,
        dimension: String,
        /// The rate's dimensions, comma-separated (`(none)` for a flat rate).
        known: String,
    },
}

impl Rate {
    /// Checks one rate on its own.
    pub fn validate(&self) -> Result<(), RateError> {
        if self.request_type.is_empty() {
            return Err(RateError::EmptyRequestType);
        }
        let negative = |a: Amount| a.micros() < 0;
        if negative(self.flat_units) || self.max_units.is_some_and(negative) {
            return Err(RateError::NegativePrice(self.request_type.clone()));
        }
        let mut names = BTreeSet::new();
        for dim in &self.dimensions {
            let bad = |problem| RateError::BadDimension {
                request_type: self.request_type.clone(),
                dimension: dim.name.clone(),
                problem,
            };
            if dim.name.is_empty() {
                return Err(bad("name must not be empty"));
            }
            if dim.per <= Decimal::ZERO {
                return Err(bad("per must be greater than zero"));
            }
            if negative(dim.units) {
                return Err(RateError::NegativePrice(self.request_type.clone()));
            }
            if !names.insert(dim.name.as_str()) {
                return Err(RateError::DuplicateDimension {
                    request_type: self.request_type.clone(),
                    dimension: dim.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Units this request costs; a dimension without a quantity counts as 0. A quantity the
    /// rate has no dimension for is refused: a misspelt `output_tokns` must not bill nothing.
    pub fn price(&self, quantities: &BTreeMap<String, Decimal>) -> Result<Amount, PricingError> {
        if let Some(unknown) = quantities
            .keys()
            .find(|name| !self.dimensions.iter().any(|d| &d.name == *name))
        {
            let known: Vec<&str> = self.dimensions.iter().map(|d| d.name.as_str()).collect();
            return Err(PricingError::UnknownDimension {
                request_type: self.request_type.clone(),
                dimension: unknown.clone(),
                known: if known.is_empty() {
                    "(none)".into()
                } else {
                    known.join(", ")
                },
            });
        }
        match (self.uncapped(quantities), self.max_units) {
            (Some(total), Some(cap)) if total > cap.to_decimal() => Ok(cap),
            // Too large even for a decimal: any cap is lower.
            (None, Some(cap)) => Ok(cap),
            (Some(total), _) => Amount::from_decimal_ceil(total).ok_or(PricingError::Overflow),
            (None, None) => Err(PricingError::Overflow),
        }
    }

    /// The exact price before rounding and capping; `None` if it overflows a decimal.
    fn uncapped(&self, quantities: &BTreeMap<String, Decimal>) -> Option<Decimal> {
        let mut total = self.flat_units.to_decimal();
        for dim in &self.dimensions {
            let Some(quantity) = quantities.get(&dim.name) else {
                continue;
            };
            let component = quantity
                .checked_div(dim.per)?
                .checked_mul(dim.units.to_decimal())?;
            total = total.checked_add(component)?;
        }
        Some(total)
    }
}

/// Checks a whole card: at least one rate, each valid, request types unique.
pub fn validate_rates(rates: &[Rate]) -> Result<(), RateError> {
    if rates.is_empty() {
        return Err(RateError::Empty);
    }
    let mut seen = BTreeSet::new();
    for rate in rates {
        rate.validate()?;
        if !seen.insert(rate.request_type.as_str()) {
            return Err(RateError::DuplicateRequestType(rate.request_type.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amount(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    fn chat() -> Rate {
        Rate {
            request_type: "chat".into(),
            flat_units: amount("1"),
            dimensions: vec![
                Dimension {
                    name: "output_tokens".into(),
                    per: Decimal::from(1000),
                    units: amount("0.2"),
                },
                Dimension {
                    name: "images".into(),
                    per: Decimal::ONE,
                    units: amount("4"),
                },
            ],
            max_units: Some(amount("50")),
            route: "model-a".into(),
            provider_cost: "0.002".into(),
            list_prices: Vec::new(),
        }
    }

    fn quantities(pairs: &[(&str, i64)]) -> BTreeMap<String, Decimal> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Decimal::from(*v)))
            .collect()
    }

    #[test]
    fn flat_plus_components() {
        let rate = chat();
        assert_eq!(rate.price(&quantities(&[])).unwrap(), amount("1"));
        // 1 + 1500/1000 × 0.2 + 2 × 4 = 9.3
        let q = quantities(&[("output_tokens", 1500), ("images", 2)]);
        assert_eq!(rate.price(&q).unwrap(), amount("9.3"));
    }

    #[test]
    fn rounds_up_to_six_places() {
        let mut rate = chat();
        rate.flat_units = Amount::ZERO;
        // 1/1000 × 0.2 = 0.0002; 1/3000 × 0.2 = 0.0000666… → 0.000067
        rate.dimensions[0].per = Decimal::from(3000);
        let q = quantities(&[("output_tokens", 1)]);
        assert_eq!(rate.price(&q).unwrap(), amount("0.000067"));
    }

    #[test]
    fn caps_at_max_units() {
        let q = quantities(&[("images", 100)]);
        assert_eq!(chat().price(&q).unwrap(), amount("50"));
    }

    #[test]
    fn refuses_unknown_quantities() {
        let q = quantities(&[("output_tokns", 99_999)]);
        assert_eq!(
            chat().price(&q),
            Err(PricingError::UnknownDimension {
                request_type: "chat".into(),
                dimension: "output_tokns".into(),
                known: chat()
                    .dimensions
                    .iter()
                    .map(|d| d.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        );
    }

    #[test]
    fn huge_quantities_cost_the_cap() {
        let q = quantities(&[("output_tokens", i64::MAX)]);
        assert_eq!(chat().price(&q).unwrap(), amount("50"));
        let huge: BTreeMap<String, Decimal> = [("output_tokens".to_string(), Decimal::MAX)]
            .into_iter()
            .collect();
        assert_eq!(chat().price(&huge).unwrap(), amount("50"));
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut rate = chat();
        rate.max_units = None;
        let q = quantities(&[("images", i64::MAX)]);
        assert_eq!(rate.price(&q), Err(PricingError::Overflow));
    }

    #[test]
    fn validation() {
        assert!(validate_rates(&[chat()]).is_ok());
        assert_eq!(validate_rates(&[]), Err(RateError::Empty));
        assert!(matches!(
            validate_rates(&[chat(), chat()]),
            Err(RateError::DuplicateRequestType(_))
        ));
        let mut bad = chat();
        bad.dimensions[0].per = Decimal::ZERO;
        assert!(matches!(
            bad.validate(),
            Err(RateError::BadDimension { .. })
        ));
        let mut dup = chat();
        dup.dimensions[1].name = "output_tokens".into();
        assert!(matches!(
            dup.validate(),
            Err(RateError::DuplicateDimension { .. })
        ));
    }

    proptest! {
        #[test]
        fn price_is_monotonic_and_capped(a in 0i64..10_000_000, b in 0i64..10_000_000) {
            let rate = chat();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let p_lo = rate.price(&quantities(&[("output_tokens", lo)])).unwrap();
            let p_hi = rate.price(&quantities(&[("output_tokens", hi)])).unwrap();
            prop_assert!(p_lo <= p_hi);
            prop_assert!(p_hi <= amount("50"));
            prop_assert!(p_lo >= rate.flat_units);
        }

        #[test]
        fn price_never_undercharges(tokens in 0i64..1_000_000_000) {
            let mut rate = chat();
            rate.max_units = None;
            let exact = Decimal::ONE + Decimal::from(tokens) / Decimal::from(1000) * Decimal::new(2, 1);
            let priced = rate.price(&quantities(&[("output_tokens", tokens)])).unwrap();
            prop_assert!(priced.to_decimal() >= exact);
            prop_assert!(priced.to_decimal() - exact < Decimal::new(1, 6));
        }
    }
}
