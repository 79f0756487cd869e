//! Price transparency: what one request of each type cost the customer in money over a
//! window, and what each quantity (tokens) effectively cost per 1,000 beside the operator's
//! reference list price. Read from the window's debits and captures (and the refunds made in
//! it) by ranges of the wallets' index (`store::entries`); never routes or provider costs.
//!
//! A request's money is the money of the grants it burnt (its main currency: the one most
//! of its money is in), less what refunds made in the window gave back. Its money is shared
//! among its flat part and its quantities in proportion to the units each accounts for on
//! the rate that priced it (before rounding and the cap), so a quantity's effective price is
//! Σ its share ÷ Σ the quantity × 1,000.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sea_orm::ConnectionTrait;

use super::{entries, rate_cards};
use crate::{
    domain::{MovementKind, Rate},
    error::Result,
};

/// Wallet ids per `IN` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DimensionLine {
    pub dimension: String,
    pub quantity: Decimal,
    pub money: Decimal,
    /// Σ money ÷ Σ quantity × 1,000 (`None` without quantity).
    pub effective_per_1000: Option<Decimal>,
    /// The list price per 1,000 of the card in force at the window's end, and its currency.
    pub list_per_1000: Option<(Decimal, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    pub request_type: String,
    pub currency: String,
    pub requests: i64,
    /// Micro-units, net of refunds.
    pub units: i128,
    pub mean: Decimal,
    pub p50: Decimal,
    pub p95: Decimal,
    pub dimensions: Vec<DimensionLine>,
}

/// One request as the report sees it.
struct Request {
    request_type: String,
    currency: String,
    units: i128,
    money: Decimal,
    /// Share of the money per dimension, and the quantity.
    shares: BTreeMap<String, (Decimal, Decimal)>,
}

/// The money of `entry`'s burns in its main currency.
fn main_money(entry: &entries::Used) -> (String, Decimal) {
    let mut by_currency: BTreeMap<&str, Decimal> = BTreeMap::new();
    for burn in entry.burns.0.iter().filter(|b| !b.currency.is_empty()) {
        if let Ok(money) = burn.money.parse::<Decimal>() {
            let sum = by_currency.entry(&burn.currency).or_default();
            *sum = sum.checked_add(money).unwrap_or(*sum);
        }
    }
    by_currency
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(c, m)| (c.to_string(), m))
        .unwrap_or_default()
}

/// How `money` divides among the rate's flat part and the entry's quantities.
fn shares(
    rate: Option<&Rate>,
    entry: &entries::Used,
    money: Decimal,
) -> BTreeMap<String, (Decimal, Decimal)> {
    let mut out = BTreeMap::new();
    let Some(rate) = rate else { return out };
    let mut parts: Vec<(String, Decimal, Decimal)> = Vec::new();
    let mut total = rate.flat_units.to_decimal();
    for (name, text) in &entry.quantities.0 {
        let (Ok(quantity), Some(dim)) = (
            text.parse::<Decimal>(),
            rate.dimensions.iter().find(|d| &d.name == name),
        ) else {
            continue;
        };
        let Some(units) = quantity
            .checked_div(dim.per)
            .and_then(|steps| steps.checked_mul(dim.units.to_decimal()))
        else {
            continue;
        };
        total = total.checked_add(units).unwrap_or(total);
        parts.push((name.clone(), units, quantity));
    }
    for (name, units, quantity) in parts {
        let share = if total.is_zero() {
            Decimal::ZERO
        } else {
            money
                .checked_mul(units)
                .and_then(|m| m.checked_div(total))
                .unwrap_or_default()
        };
        out.insert(name, (share, quantity));
    }
    out
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(values: &[Decimal], q: f64) -> Decimal {
    if values.is_empty() {
        return Decimal::ZERO;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The report for `wallets` over [start, end).
pub async fn report(
    conn: &impl ConnectionTrait,
    wallets: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<Line>> {
    let mut entries = Vec::new();
    let kinds = [
        MovementKind::Debit,
        MovementKind::Capture,
        MovementKind::Refund,
    ];
    let mut window = entries::Window::<entries::Used>::new(wallets, (start, end), &kinds);
    while let Some(chunk) = window.next(conn).await? {
        entries.extend(chunk);
    }
    let cards =
        rate_cards::by_versions(conn, entries.iter().filter_map(|e| e.rate_card_version)).await?;
    let current = rate_cards::in_force(conn, end.saturating_sub(1)).await?;

    let mut requests: BTreeMap<String, Request> = BTreeMap::new();
    let mut refunds = Vec::new();
    for entry in &entries {
        if entry.kind == MovementKind::Refund {
            refunds.push(entry);
            continue;
        }
        let (currency, money) = main_money(entry);
        let rate = entry
            .rate_card_version
            .and_then(|v| cards.get(&v))
            .and_then(|card| card.rate(&entry.request_type));
        requests.insert(
            entry.id.clone(),
            Request {
                request_type: entry.request_type.clone(),
                units: i128::from(entry.units),
                shares: shares(rate, entry, money),
                currency,
                money,
            },
        );
    }
    for refund in refunds {
        let Some(request) = refund.ref_id.as_ref().and_then(|id| requests.get_mut(id)) else {
            continue;
        };
        request.units -= i128::from(refund.units);
        let back = refund
            .burns
            .0
            .iter()
            .filter(|b| b.currency == request.currency)
            .filter_map(|b| b.money.parse::<Decimal>().ok())
            .fold(Decimal::ZERO, |a, b| a.checked_add(b).unwrap_or(a));
        let before = request.money;
        request.money = (request.money - back).max(Decimal::ZERO);
        // The dimensions keep their share of what is left.
        if !before.is_zero() {
            for (share, _) in request.shares.values_mut() {
                *share = share
                    .checked_mul(request.money)
                    .and_then(|s| s.checked_div(before))
                    .unwrap_or_default();
            }
        }
    }

    let mut groups: BTreeMap<(String, String), Vec<Request>> = BTreeMap::new();
    for request in requests.into_values() {
        groups
            .entry((request.request_type.clone(), request.currency.clone()))
            .or_default()
            .push(request);
    }
    let mut lines = Vec::new();
    for ((request_type, currency), group) in groups {
        let mut money: Vec<Decimal> = group.iter().map(|r| r.money).collect();
        money.sort_unstable();
        let total = money
            .iter()
            .fold(Decimal::ZERO, |a, b| a.checked_add(*b).unwrap_or(a));
        let mut dims: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for request in &group {
            for (name, (share, quantity)) in &request.shares {
                let sum = dims.entry(name.clone()).or_default();
                sum.0 = sum.0.checked_add(*share).unwrap_or(sum.0);
                sum.1 = sum.1.checked_add(*quantity).unwrap_or(sum.1);
            }
        }
        let list = current.as_ref().and_then(|card| card.rate(&request_type));
        let dimensions = dims
            .into_iter()
            .map(|(dimension, (money, quantity))| DimensionLine {
                effective_per_1000: money
                    .checked_mul(Decimal::from(1000))
                    .and_then(|m| m.checked_div(quantity))
                    .map(|d| d.round_dp(6).normalize()),
                list_per_1000: list
                    .and_then(|rate| rate.list_prices.iter().find(|p| p.dimension == dimension))
                    .and_then(|p| {
                        let per_1000 = p
                            .price
                            .checked_mul(Decimal::from(1000))?
                            .checked_div(p.per)?;
                        Some((per_1000.round_dp(6).normalize(), p.currency.clone()))
                    }),
                money: money.round_dp(12).normalize(),
                quantity: quantity.normalize(),
                dimension,
            })
            .collect();
        let count = group.len() as i64;
        lines.push(Line {
            request_type,
            currency,
            requests: count,
            units: group.iter().map(|r| r.units).sum(),
            mean: total
                .checked_div(Decimal::from(count))
                .map(|m| m.round_dp(12).normalize())
                .unwrap_or_default(),
            p50: percentile(&money, 0.50),
            p95: percentile(&money, 0.95),
            dimensions,
        });
    }
    Ok(lines)
}
