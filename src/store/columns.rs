//! Typed column values. JSON columns are `jsonb` on PostgreSQL and JSON text on SQLite; each
//! has a Rust type here, so a stored value that is not that shape fails the read (INTERNAL)
//! instead of reading as a default, and `allot verify` names the row (`store::verify`).
//! Exact decimals (unit prices) are text columns read as [`Price`].
//!
//! The hash chain (`store::chain`) covers an entry's JSON as the compact text serde writes
//! for these types — maps in key order, structs in field order — which is the text rows
//! stored as text before `jsonb` held them, so their hashes still match.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sea_orm::{DeriveValueType, FromJsonQueryResult};
use serde::{Deserialize, Serialize};

use crate::domain::{Amount, Burn, Rate, amount::format_decimal};

/// A JSON object of strings: account labels, entry metadata, request quantities (name →
/// decimal string).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct StringMap(pub BTreeMap<String, String>);

impl StringMap {
    /// Quantities as stored: each decimal in its shortest exact form.
    pub fn quantities(quantities: &BTreeMap<String, Decimal>) -> Self {
        StringMap(
            quantities
                .iter()
                .map(|(name, value)| (name.clone(), format_decimal(*value)))
                .collect(),
        )
    }
}

/// A wallet's low-balance thresholds (a JSON array of decimal strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct Thresholds(pub Vec<Amount>);

/// A rate card's rates (a JSON array of [`Rate`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct Rates(pub Vec<Rate>);

/// An account override's price (a JSON [`Rate`]; its route and provider cost are unused:
/// those stay the card's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct OverrideRate(pub Option<Rate>);

/// The grants a ledger entry drew from or returned to (a JSON array of [`StoredBurn`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
#[serde(transparent)]
pub struct Burns(pub Vec<StoredBurn>);

/// One burn as stored on a ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBurn {
    /// Empty when the units came from (or went back to) the overdraft.
    pub grant_id: String,
    pub units: Amount,
    pub unit_price: String,
    pub currency: String,
    /// Empty when the value was out of range when recorded.
    pub money: String,
}

impl From<&Burn> for StoredBurn {
    fn from(burn: &Burn) -> Self {
        let money = match burn.money() {
            Some(money) => format_decimal(money),
            None => {
                // Only a grant stored before unit prices were bounded can get here.
                tracing::error!(
                    grant_id = burn.grant_id.as_deref().unwrap_or(""),
                    units = %burn.units,
                    unit_price = %burn.unit_price,
                    "money value out of range; recorded without one"
                );
                String::new()
            }
        };
        StoredBurn {
            grant_id: burn.grant_id.clone().unwrap_or_default(),
            units: burn.units,
            unit_price: format_decimal(burn.unit_price),
            currency: burn.currency.clone(),
            money,
        }
    }
}

/// Money per unit, stored as exact decimal text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, DeriveValueType)]
#[sea_orm(
    value_type = "String",
    from_str = "Price::parse",
    to_str = "Price::text"
)]
pub struct Price(pub Decimal);

impl Price {
    fn parse(text: &str) -> Result<Self, rust_decimal::Error> {
        text.parse().map(Price)
    }

    fn text(&self) -> String {
        format_decimal(self.0)
    }
}

/// The compact JSON text of a column value (what the hash chain and etags cover).
pub fn json_text<T: Serialize>(value: &T) -> String {
    // These types hold only strings, maps with string keys and structs: serializing cannot
    // fail.
    serde_json::to_string(value).expect("column values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_the_text_earlier_versions_stored() {
        let burns: Burns = serde_json::from_str(
            r#"[{"grant_id":"grt_1","units":"1.5","unit_price":"0.02","currency":"USD","money":"0.03"}]"#,
        )
        .unwrap();
        assert_eq!(
            json_text(&burns),
            r#"[{"grant_id":"grt_1","units":"1.5","unit_price":"0.02","currency":"USD","money":"0.03"}]"#
        );
        // jsonb reorders keys; the typed value does not care and writes them back in order.
        let map: StringMap = serde_json::from_str(r#"{"zeta": "1", "alpha": "2"}"#).unwrap();
        assert_eq!(json_text(&map), r#"{"alpha":"2","zeta":"1"}"#);
        let thresholds: Thresholds = serde_json::from_str(r#"["10", "2.5"]"#).unwrap();
        assert_eq!(json_text(&thresholds), r#"["10","2.5"]"#);
    }

    #[test]
    fn a_value_of_the_wrong_shape_does_not_parse() {
        assert!(serde_json::from_str::<StringMap>(r#"{"a": 1}"#).is_err());
        assert!(serde_json::from_str::<Thresholds>(r#"["ten"]"#).is_err());
        assert!(serde_json::from_str::<Burns>(r#"[{"grant_id": "g"}]"#).is_err());
        assert!(Price::parse("1.2.3").is_err());
        assert_eq!(Price::parse("0.020").unwrap().text(), "0.02");
    }
}
