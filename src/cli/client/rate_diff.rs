//! `allot rates diff A B`: what changes, request type by request type, from one rate card to
//! another — the prices a customer pays (flat units, dimensions, cap) and what operators
//! alone see (route, provider cost). Decimals compare by value (`1` = `1.0`).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::proto;

/// One difference: a request type added or removed, or one field of it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub request_type: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The field that changed (`flat_units`, `dimension output_tokens`, …); empty for added and
    /// removed request types.
    pub field: String,
    pub before: String,
    pub after: String,
}

/// Whether two decimal strings are the same number (or the same text, if either is not one:
/// an empty `max_units` is no cap, not a cap of 0).
fn same(a: &str, b: &str) -> bool {
    let value = |s: &str| s.parse::<Decimal>().ok().map(|d| d.normalize());
    match (value(a), value(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// A rate's price in one line: `1 + 0.2/1000 output_tokens, max 50`.
fn price(rate: &proto::Rate) -> String {
    let mut text = rate.flat_units.clone();
    for d in &rate.dimensions {
        text += &format!(" + {}/{} {}", d.units, d.per, d.name);
    }
    if !rate.max_units.is_empty() {
        text += &format!(", max {}", rate.max_units);
    }
    text
}

fn dimension(d: &proto::Dimension) -> String {
    format!("{} per {}", d.units, d.per)
}

/// The changes from `before` to `after`, in request type order.
pub fn diff(before: &[proto::Rate], after: &[proto::Rate]) -> Vec<Change> {
    let by_type = |rates: &[proto::Rate]| -> BTreeMap<String, proto::Rate> {
        rates
            .iter()
            .map(|r| (r.request_type.clone(), r.clone()))
            .collect()
    };
    let (old, new) = (by_type(before), by_type(after));
    let mut types: Vec<&String> = old.keys().chain(new.keys()).collect();
    types.sort();
    types.dedup();
    let mut changes = Vec::new();
    for request_type in types {
        let change = |change, field: &str, before: String, after: String| Change {
            request_type: request_type.clone(),
            change,
            field: field.to_string(),
            before,
            after,
        };
        let (a, b) = match (old.get(request_type), new.get(request_type)) {
            (Some(a), Some(b)) => (a, b),
            (None, Some(b)) => {
                changes.push(change("added", "", String::new(), price(b)));
                continue;
            }
            (Some(a), None) => {
                changes.push(change("removed", "", price(a), String::new()));
                continue;
            }
            (None, None) => continue,
        };
        for (field, x, y) in [
            ("flat_units", &a.flat_units, &b.flat_units),
            ("max_units", &a.max_units, &b.max_units),
            ("provider_cost", &a.provider_cost, &b.provider_cost),
        ] {
            if !same(x, y) {
                changes.push(change("changed", field, x.clone(), y.clone()));
            }
        }
        if a.route != b.route {
            changes.push(change("changed", "route", a.route.clone(), b.route.clone()));
        }
        let dims = |r: &proto::Rate| -> BTreeMap<String, proto::Dimension> {
            r.dimensions
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect()
        };
        let (da, db) = (dims(a), dims(b));
        let mut names: Vec<&String> = da.keys().chain(db.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let field = format!("dimension {name}");
            match (da.get(name), db.get(name)) {
                (Some(x), Some(y)) if same(&x.units, &y.units) && same(&x.per, &y.per) => {}
                (x, y) => changes.push(change(
                    "changed",
                    &field,
                    x.map(dimension).unwrap_or_default(),
                    y.map(dimension).unwrap_or_default(),
                )),
            }
        }
        let lists = |r: &proto::Rate| -> BTreeMap<String, proto::ListPrice> {
            r.list_prices
                .iter()
                .map(|p| (p.dimension.clone(), p.clone()))
                .collect()
        };
        let (la, lb) = (lists(a), lists(b));
        let mut names: Vec<&String> = la.keys().chain(lb.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let per = |p: &proto::ListPrice| {
                if p.per.is_empty() {
                    "1000".to_string()
                } else {
                    p.per.clone()
                }
            };
            match (la.get(name), lb.get(name)) {
                (Some(x), Some(y))
                    if x.currency == y.currency
                        && same(&x.price, &y.price)
                        && same(&per(x), &per(y)) => {}
                (x, y) => {
                    let text =
                        |p: &proto::ListPrice| format!("{} {}/{}", p.currency, p.price, per(p));
                    changes.push(change(
                        "changed",
                        &format!("list price {name}"),
                        x.map(text).unwrap_or_default(),
                        y.map(text).unwrap_or_default(),
                    ))
                }
            }
        }
    }
    changes
}

/// The changes as a table, or a line saying there are none.
pub fn text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no differences\n".to_string();
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.request_type.clone(),
                c.change.to_string(),
                dash(&c.field),
                dash(&c.before),
                dash(&c.after),
            ]
        })
        .collect();
    super::output::table(
        &["request_type", "change", "field", "before", "after"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(request_type: &str, flat: &str, dims: &[(&str, &str, &str)]) -> proto::Rate {
        proto::Rate {
            request_type: request_type.into(),
            flat_units: flat.into(),
            dimensions: dims
                .iter()
                .map(|(name, per, units)| proto::Dimension {
                    name: (*name).into(),
                    per: (*per).into(),
                    units: (*units).into(),
                })
                .collect(),
            route: "openai/gpt-4o".into(),
            provider_cost: "0.002".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_card_has_no_differences() {
        let card = [rate("chat", "1", &[("output_tokens", "1000", "0.2")])];
        assert!(diff(&card, &card).is_empty());
        // Decimals compare by value.
        let same = [rate("chat", "1.0", &[("output_tokens", "1000.00", "0.20")])];
        assert!(diff(&card, &same).is_empty());
        // No cap and a cap are different, whatever the cap.
        let mut capped = card[0].clone();
        capped.max_units = "0".into();
        assert_eq!(diff(&card, &[capped])[0].field, "max_units");
        assert_eq!(text(&[]), "no differences\n");
    }

    #[test]
    fn a_remap_shows_route_and_cost_only() {
        let before = [rate("chat", "1", &[])];
        let mut remapped = before[0].clone();
        remapped.route = "anthropic/claude".into();
        remapped.provider_cost = "0.0015".into();
        let changes = diff(&before, &[remapped]);
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["provider_cost", "route"]);
        assert_eq!(changes[0].before, "0.002");
        assert_eq!(changes[0].after, "0.0015");
    }

    #[test]
    fn added_removed_and_changed_prices_and_dimensions() {
        let before = [
            rate("chat", "1", &[("output_tokens", "1000", "0.2")]),
            rate("search", "0.5", &[]),
        ];
        let after = [
            rate("chat", "2", &[("input_tokens", "1000", "0.05")]),
            rate("image", "4", &[]),
        ];
        let changes = diff(&before, &after);
        let rows: Vec<(&str, &str, &str, &str, &str)> = changes
            .iter()
            .map(|c| {
                (
                    c.request_type.as_str(),
                    c.change,
                    c.field.as_str(),
                    c.before.as_str(),
                    c.after.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("chat", "changed", "flat_units", "1", "2"),
                (
                    "chat",
                    "changed",
                    "dimension input_tokens",
                    "",
                    "0.05 per 1000"
                ),
                (
                    "chat",
                    "changed",
                    "dimension output_tokens",
                    "0.2 per 1000",
                    ""
                ),
                ("image", "added", "", "", "4"),
                ("search", "removed", "", "0.5", ""),
            ]
        );
        let table = text(&changes);
        assert!(
            table.contains("search") && table.contains("removed"),
            "{table}"
        );
    }
}
