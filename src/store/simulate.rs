//! Simulating a rate card: the requests of a past window priced again with a draft card and
//! the account overrides in force now, beside what they were charged.
//!
//! Per account and request type: the requests (debits and captures) of the window, their
//! units and money as charged, and as the draft would charge them: an override in force now
//! for the account (the nearest, as a debit would find it) else the draft's rate, applied to
//! each request's recorded quantities. A request's simulated money is its money scaled by
//! simulated ÷ actual units (the unit prices of the grants it burnt stay). Captures of
//! explicit units carry no quantities and keep their units. Refunds are left out: the
//! simulation compares prices. A request type the draft does not price is counted as
//! unpriced (its requests keep their units, and are named in `unpriced`).
//!
//! Provider cost: actual = what the entries recorded; simulated = the draft rate's
//! `provider_cost` per request. So a remap of route and provider cost alone shows no
//! customer change and the margin change.
//!
//! Cost: the window's debits and captures of the wallets covered, read by ranges of the
//! wallets' index, a chunk of wallets at a time (`store::entries`).

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::{
    entity::{account, wallet},
    entries, overrides,
};
use crate::{
    domain::{Amount, MovementKind, Rate},
    error::Result,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatedLine {
    pub account_id: String,
    pub request_type: String,
    pub requests: i64,
    /// Micro-units.
    pub actual_units: i128,
    pub simulated_units: i128,
    pub actual_money: BTreeMap<String, Decimal>,
    pub simulated_money: BTreeMap<String, Decimal>,
    pub actual_provider_cost: Decimal,
    pub simulated_provider_cost: Decimal,
    /// Requests the draft does not price (kept at their units).
    pub unpriced: i64,
}

fn add(money: &mut BTreeMap<String, Decimal>, currency: &str, value: Decimal) {
    if currency.is_empty() {
        return;
    }
    let sum = money.entry(currency.to_string()).or_default();
    if let Some(total) = sum.checked_add(value) {
        *sum = total;
    }
}

/// Simulates `draft` over [start, end) for `wallets` (all wallets for `None`).
pub async fn simulate(
    conn: &impl ConnectionTrait,
    draft: &[Rate],
    wallets: Option<Vec<String>>,
    start: i64,
    end: i64,
    now: i64,
) -> Result<Vec<SimulatedLine>> {
    let wallets = match wallets {
        Some(ids) => ids,
        None => {
            wallet::Entity::find()
                .select_only()
                .column(wallet::Column::Id)
                .into_tuple()
                .all(conn)
                .await?
        }
    };
    let records = overrides::all(conn).await?;
    let mut ancestry: HashMap<String, Vec<String>> = HashMap::new();
    let mut lines: BTreeMap<(String, String), SimulatedLine> = BTreeMap::new();
    let kinds = [MovementKind::Debit, MovementKind::Capture];
    let mut window = entries::Window::<entries::Used>::new(&wallets, (start, end), &kinds);
    while let Some(entries) = window.next(conn).await? {
        if !records.is_empty() {
            let missing: Vec<String> = entries
                .iter()
                .map(|e| e.account_id.clone())
                .filter(|id| !ancestry.contains_key(id))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !missing.is_empty() {
                let rows: Vec<(String, String)> = account::Entity::find()
                    .select_only()
                    .column(account::Column::Id)
                    .column(account::Column::Ancestry)
                    .filter(account::Column::Id.is_in(missing))
                    .into_tuple()
                    .all(conn)
                    .await?;
                for (id, path) in rows {
                    let ids = path
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect();
                    ancestry.insert(id, ids);
                }
            }
        }
        for entry in entries {
            let line = lines
                .entry((entry.account_id.clone(), entry.request_type.clone()))
                .or_insert_with(|| SimulatedLine {
                    account_id: entry.account_id.clone(),
                    request_type: entry.request_type.clone(),
                    ..SimulatedLine::default()
                });
            line.requests += 1;
            let actual = i128::from(entry.units);
            line.actual_units += actual;
            if let Ok(cost) = entry.provider_cost.parse::<Decimal>() {
                line.actual_provider_cost = line
                    .actual_provider_cost
                    .checked_add(cost)
                    .unwrap_or(line.actual_provider_cost);
            }
            let rate = draft.iter().find(|r| r.request_type == entry.request_type);
            if let Some(cost) = rate.and_then(|r| r.provider_cost.parse::<Decimal>().ok()) {
                line.simulated_provider_cost = line
                    .simulated_provider_cost
                    .checked_add(cost)
                    .unwrap_or(line.simulated_provider_cost);
            }
            let path: Vec<&str> = ancestry
                .get(&entry.account_id)
                .map(|ids| ids.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let contract = records
                .in_force(&path, &entry.request_type, now)
                .map(|(_, rate)| rate);
            let quantities: Option<BTreeMap<String, Decimal>> = entry
                .quantities
                .0
                .iter()
                .map(|(k, v)| v.parse::<Decimal>().ok().map(|q| (k.clone(), q)))
                .collect();
            let explicit = entry.kind == MovementKind::Capture && entry.quantities.0.is_empty();
            let simulated = match (contract.or(rate), quantities) {
                _ if explicit => actual,
                (Some(rate), Some(quantities)) => match rate.price(&quantities) {
                    Ok(units) => i128::from(units.micros()),
                    Err(_) => {
                        line.unpriced += 1;
                        actual
                    }
                },
                _ => {
                    line.unpriced += 1;
                    actual
                }
            };
            line.simulated_units += simulated;
            for burn in entry.burns.0.iter().filter(|b| !b.currency.is_empty()) {
                let Ok(money) = burn.money.parse::<Decimal>() else {
                    continue;
                };
                add(&mut line.actual_money, &burn.currency, money);
                let scaled = if actual == 0 {
                    money
                } else {
                    Amount::from_micros(i64::try_from(simulated).unwrap_or(i64::MAX))
                        .to_decimal()
                        .checked_mul(money)
                        .and_then(|m| m.checked_div(Amount::from_micros(entry.units).to_decimal()))
                        .unwrap_or(money)
                };
                add(&mut line.simulated_money, &burn.currency, scaled);
            }
        }
    }
    Ok(lines.into_values().collect())
}
