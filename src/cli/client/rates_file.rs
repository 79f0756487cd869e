//! The rate card file an operator keeps in git, read by `allot rates publish FILE.toml`.

use std::{fmt, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer, de};

use crate::proto;

/// `--help` text of `allot rates publish`; `examples/rates.toml` is a complete sample.
pub const FORMAT_HELP: &str = r#"Creates a draft rate card from a TOML file, then publishes it (effective now, or at
--effective-time). Prints the published card. Only TOML is read (no YAML).

File format (see examples/rates.toml):

  notes = "GPT swap for chat, Nov 2026"   # optional; --notes overrides it

  [[rate]]                                # one table per request type
  request_type = "chat.message"
  flat_units = "1"                        # charged per request
  max_units = "50"                        # optional cap per request
  route = "openai/gpt-4o"                 # optional, operator-only
  provider_cost = "0.002"                 # optional, operator-only (money)

  [[rate.dimension]]                      # optional, any number
  name = "output_tokens"                  # quantity name, as in --qty NAME=VALUE
  per = "1000"                            # optional, default 1
  units = "0.2"                           # units per `per` of the quantity

  [[rate.list_price]]                     # optional: a reference price buyers see
  dimension = "output_tokens"             # one of the rate's dimensions
  per = "1000"                            # optional, default 1000
  price = "0.01"                          # money per `per` (e.g. the model's public price)
  currency = "USD"

  [[rate]]
  request_type = "image.generate"
  flat_units = "4"

units = flat_units + sum(quantity / per * units), rounded up to 6 places, capped at
max_units. Write amounts as strings ("0.2"): numbers are accepted too, but a float is
converted through its shortest decimal form."#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RatesFile {
    #[serde(default)]
    notes: String,
    #[serde(default, rename = "rate")]
    rates: Vec<RateEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateEntry {
    request_type: String,
    flat_units: Amount,
    #[serde(default)]
    max_units: Amount,
    #[serde(default)]
    route: String,
    #[serde(default)]
    provider_cost: Amount,
    #[serde(default, rename = "dimension")]
    dimensions: Vec<DimensionEntry>,
    #[serde(default, rename = "list_price")]
    list_prices: Vec<ListPriceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListPriceEntry {
    dimension: String,
    #[serde(default)]
    per: Amount,
    price: Amount,
    currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DimensionEntry {
    name: String,
    #[serde(default)]
    per: Amount,
    units: Amount,
}

/// A decimal amount as text; written in the file as a string, an integer or a float.
#[derive(Debug, Default, PartialEq)]
struct Amount(String);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a decimal amount, preferably as a string like "0.25""#)
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Amount, E> {
                Ok(Amount(value.trim().to_string()))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Amount, E> {
                Ok(Amount(value.to_string()))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Amount, E> {
                if !value.is_finite() {
                    return Err(E::custom("amounts must be finite"));
                }
                // `Display` for f64 is the shortest text that reads back as the same float,
                // never in exponent form: 0.2 → "0.2", 1e-7 → "0.0000001".
                Ok(Amount(value.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses a rate card file's text into a draft card.
pub fn parse(text: &str) -> Result<proto::RateCard> {
    let file: RatesFile = toml::from_str(text)?;
    Ok(proto::RateCard {
        notes: file.notes,
        rates: file
            .rates
            .into_iter()
            .map(|rate| proto::Rate {
                request_type: rate.request_type,
                flat_units: rate.flat_units.0,
                dimensions: rate
                    .dimensions
                    .into_iter()
                    .map(|d| proto::Dimension {
                        name: d.name,
                        per: d.per.0,
                        units: d.units.0,
                    })
                    .collect(),
                max_units: rate.max_units.0,
                route: rate.route,
                provider_cost: rate.provider_cost.0,
                list_prices: rate
                    .list_prices
                    .into_iter()
                    .map(|p| proto::ListPrice {
                        dimension: p.dimension,
                        per: p.per.0,
                        price: p.price.0,
                        currency: p.currency,
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    })
}

/// Reads and parses a rate card file.
pub fn load(path: &Path) -> Result<proto::RateCard> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a valid rate card file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_file_parses() {
        let card = parse(include_str!("../../../examples/rates.toml")).unwrap();
        assert!(!card.notes.is_empty());
        let chat = &card.rates[0];
        assert_eq!(chat.request_type, "chat.message");
        assert_eq!(chat.flat_units, "1");
        assert_eq!(chat.max_units, "50");
        assert_eq!(chat.route, "openai/gpt-4o");
        assert_eq!(chat.dimensions[1].name, "output_tokens");
        assert_eq!(chat.dimensions[1].per, "1000");
        assert_eq!(chat.dimensions[1].units, "0.2");
        assert_eq!(card.rates.last().unwrap().max_units, "");
    }

    #[test]
    fn numbers_become_decimal_text() {
        let card = parse(
            "[[rate]]\nrequest_type = \"a\"\nflat_units = 4\nmax_units = 0.1\n\
             provider_cost = 1e-7\n[[rate.dimension]]\nname = \"n\"\nunits = 2.50\n",
        )
        .unwrap();
        let rate = &card.rates[0];
        assert_eq!(rate.flat_units, "4");
        assert_eq!(rate.max_units, "0.1");
        assert_eq!(rate.provider_cost, "0.0000001");
        assert_eq!(rate.dimensions[0].units, "2.5");
        assert_eq!(rate.dimensions[0].per, "");
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let err = parse("[[rate]]\nrequest_type = \"a\"\nflat_unit = \"1\"\n").unwrap_err();
        assert!(err.to_string().contains("flat_unit"), "{err}");
        let err = parse("[[rate]]\nrequest_type = \"a\"\nflat_units = true\n").unwrap_err();
        assert!(err.to_string().contains("decimal amount"), "{err}");
    }
}
